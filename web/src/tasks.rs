//! Admin writes as tasks: a request validates its input, queues the write and answers 202
//! with a task id; one worker thread runs the writes in order (one writer per process; the
//! index LOCK guards across processes), publishes each as a generation and swaps it in
//! before the task reports `done`. `GET /api/tasks/{id}` reads the report.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use serde::Serialize;

use crate::error::{ApiError, ApiResult, ErrorBody};
use lesion_search::service::Index;

/// Finished reports kept for reading back; the oldest finished ones go first.
const KEPT_REPORTS: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Queued,
    Running,
    Done,
    Failed,
}

impl TaskState {
    pub fn finished(self) -> bool {
        matches!(self, TaskState::Done | TaskState::Failed)
    }
}

/// What a write reports when it lands: its answer and the generation it published.
pub struct Landed {
    pub result: serde_json::Value,
    pub generation: u64,
}

/// A failed write's error as the request would have answered it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TaskError {
    pub status: u16,
    #[serde(flatten)]
    pub body: ErrorBody,
}

/// A write task: queued, running, or finished with the generation it published or the
/// error the request would have answered.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TaskReport {
    pub id: String,
    /// `add` or `delete`.
    pub kind: &'static str,
    pub state: TaskState,
    /// Milliseconds since the Unix epoch.
    pub submitted_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// The generation the write published (when done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
}

type Work = Box<dyn FnOnce(&Arc<Index>) -> ApiResult<Landed> + Send>;

struct Job {
    id: String,
    work: Work,
}

pub struct TaskQueue {
    sender: Mutex<Option<SyncSender<Job>>>,
    reports: Arc<Mutex<VecDeque<TaskReport>>>,
    counter: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl TaskQueue {
    /// Starts the worker; it ends when the queue is dropped and the queued writes are done.
    pub fn start(index: Arc<Index>, capacity: usize) -> Self {
        let (sender, receiver) = sync_channel::<Job>(capacity.max(1));
        let reports = Arc::new(Mutex::new(VecDeque::new()));
        let worker_reports = reports.clone();
        let spawned = std::thread::Builder::new()
            .name("index-writer".into())
            .spawn(move || run(receiver, index, worker_reports));
        let sender = match spawned {
            Ok(_) => Some(sender),
            Err(e) => {
                eprintln!(
                    "warning: could not start the index writer ({e}); admin writes will be refused"
                );
                None
            }
        };
        TaskQueue {
            sender: Mutex::new(sender),
            reports,
            counter: AtomicU64::new(0),
        }
    }

    /// Queues a write; the report it starts with. 503 `busy` when the queue is full.
    pub fn submit(
        &self,
        kind: &'static str,
        work: impl FnOnce(&Arc<Index>) -> ApiResult<Landed> + Send + 'static,
    ) -> ApiResult<TaskReport> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("t{n}");
        let report = TaskReport {
            id: id.clone(),
            kind,
            state: TaskState::Queued,
            submitted_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            generation: None,
            result: None,
            error: None,
        };
        // Recorded before sending, so the worker always finds the report it updates.
        self.update(|reports| {
            reports.push_back(report.clone());
            trim(reports);
        });
        let sender = self.sender.lock().ok().and_then(|s| s.clone());
        let refused = match sender {
            None => Some(ApiError::internal("the index writer is not running")),
            Some(sender) => match sender.try_send(Job {
                id: id.clone(),
                work: Box::new(work),
            }) {
                Ok(()) => None,
                Err(TrySendError::Full(_)) => Some(
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "busy",
                        "too many index writes are waiting; retry shortly",
                    )
                    .retry_after(5),
                ),
                Err(TrySendError::Disconnected(_)) => {
                    Some(ApiError::internal("the index writer stopped"))
                }
            },
        };
        if let Some(error) = refused {
            self.update(|reports| reports.retain(|r| r.id != id));
            return Err(error);
        }
        Ok(report)
    }

    pub fn report(&self, id: &str) -> Option<TaskReport> {
        let reports = self.reports.lock().ok()?;
        reports.iter().find(|r| r.id == id).cloned()
    }

    /// Writes queued or running now.
    pub fn pending(&self) -> usize {
        self.reports
            .lock()
            .map(|r| r.iter().filter(|t| !t.state.finished()).count())
            .unwrap_or(0)
    }

    /// The most recent reports, newest first.
    pub fn recent(&self, limit: usize) -> Vec<TaskReport> {
        self.reports
            .lock()
            .map(|r| r.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    fn update(&self, change: impl FnOnce(&mut VecDeque<TaskReport>)) {
        let mut reports = self
            .reports
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut reports);
    }
}

impl Drop for TaskQueue {
    fn drop(&mut self) {
        // Closing the channel lets the worker finish what is queued and stop.
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
    }
}

/// Drops the oldest finished reports past [`KEPT_REPORTS`] (queued and running ones stay).
fn trim(reports: &mut VecDeque<TaskReport>) {
    while reports.len() > KEPT_REPORTS {
        match reports.iter().position(|r| r.state.finished()) {
            Some(oldest) => {
                reports.remove(oldest);
            }
            None => break,
        }
    }
}

fn run(receiver: Receiver<Job>, index: Arc<Index>, reports: Arc<Mutex<VecDeque<TaskReport>>>) {
    let set = |id: &str, change: &dyn Fn(&mut TaskReport)| {
        let mut reports = reports
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(report) = reports.iter_mut().find(|r| r.id == id) {
            change(report);
        }
    };
    while let Ok(Job { id, work }) = receiver.recv() {
        set(&id, &|r| {
            r.state = TaskState::Running;
            r.started_ms = Some(now_ms());
        });
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&index)))
            .unwrap_or_else(|_| Err(ApiError::internal("the write failed unexpectedly")));
        let finished = now_ms();
        match outcome {
            Ok(landed) => set(&id, &|r| {
                r.state = TaskState::Done;
                r.finished_ms = Some(finished);
                r.generation = Some(landed.generation);
                r.result = Some(landed.result.clone());
            }),
            Err(error) => set(&id, &|r| {
                r.state = TaskState::Failed;
                r.finished_ms = Some(finished);
                r.error = Some(TaskError {
                    status: error.status.as_u16(),
                    body: error.body.clone(),
                });
            }),
        }
    }
}
