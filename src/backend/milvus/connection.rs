//! A client of one Milvus server, usable from synchronous code: the SDK's calls run on a
//! small tokio runtime of the connection's own and the caller waits for each.

use std::future::Future;
use std::sync::mpsc;

use milvus::client::{Client, ConsistencyLevel};
use milvus::data::FieldColumn;
use milvus::query::QueryOptions;
use milvus::value::ValueVec;

use super::stamp::Stamp;
use super::MilvusSettings;
use crate::error::{Error, Result};

/// How every read sees a collection: at most a few seconds stale. Rows a writer inserted
/// become visible to such readers only that long after, so a filled collection is served
/// only once readers see all of it ([`Connection::mirror`] waits for it).
pub(super) const READERS: ConsistencyLevel = ConsistencyLevel::Bounded;

/// A client of one Milvus server, usable from synchronous code.
pub struct Connection {
    runtime: tokio::runtime::Runtime,
    client: Client,
    settings: MilvusSettings,
}

impl Connection {
    pub fn connect(settings: &MilvusSettings) -> Result<Self> {
        settings.check()?;
        let runtime = client_runtime(settings)?;
        let client = connect_client(&runtime, settings)?;
        Ok(Connection {
            runtime,
            client,
            settings: settings.clone(),
        })
    }

    pub fn settings(&self) -> &MilvusSettings {
        &self.settings
    }

    pub(super) fn error(&self, message: String) -> Error {
        milvus_error(&self.settings, message)
    }

    /// Runs one SDK call on the client runtime and waits for it; works from any thread,
    /// an async one included, since the waiting thread never drives the runtime.
    pub(super) fn run<T, F>(&self, what: &str, call: impl FnOnce(Client) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = milvus::error::Result<T>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let future = call(self.client.clone());
        self.runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv()
            .map_err(|_| self.error(format!("{what}: the client runtime stopped")))?
            .map_err(|e| self.error(format!("{what}: {e}")))
    }

    /// The server's version string (`v2.3.5-lite`); `None` from a server that does not
    /// say (milvus-lite 2.5 answers neither `Connect` with its server info nor `GetVersion`).
    pub fn server_version(&self) -> Option<String> {
        self.run("server version", |c| async move {
            c.get_server_version().await.map(|v| v.version)
        })
        .ok()
    }

    /// Whether the server answers at all (a cheap call every version implements).
    pub fn ping(&self) -> Result<()> {
        self.collections().map(|_| ())
    }

    pub(super) fn collections(&self) -> Result<Vec<String>> {
        self.run(
            "list collections",
            |c| async move { c.list_collections().await },
        )
    }

    /// Loads a collection for search and query (a restarted server holds them unloaded).
    pub(super) fn load(&self, collection: &str) -> Result<()> {
        let target = collection.to_string();
        self.run("load collection", move |c| async move {
            c.load_collection(target, None).await
        })
    }

    pub(super) fn drop_collection(&self, collection: &str) -> Result<()> {
        let target = collection.to_string();
        self.run("drop collection", move |c| async move {
            c.drop_collection(target).await
        })
    }

    /// Rows of `collection` passing `expr`, as readers see them now.
    pub(super) fn visible_rows(&self, collection: &str, expr: &str) -> Result<usize> {
        let (collection, expr) = (collection.to_string(), expr.to_string());
        let options = QueryOptions::new()
            .output_fields(vec!["count(*)".into()])
            .consistency_level(READERS.into());
        let columns = self.run("count", move |c| async move {
            c.query(collection, &expr, &options).await
        })?;
        match column(&columns, "count(*)") {
            Some(ValueVec::Long(n)) if n.len() == 1 => Ok(n[0] as usize),
            _ => Err(self.error("count: no count(*) in the answer".into())),
        }
    }

    /// The stamp of `collection`; `None` when there is no such collection or something
    /// else made it.
    pub(super) fn stamp(&self, collection: &str) -> Result<Option<Stamp>> {
        let name = collection.to_string();
        let exists = self.run("has collection", move |c| async move {
            c.has_collection(name).await
        })?;
        if !exists {
            return Ok(None);
        }
        let name = collection.to_string();
        let description = self.run("describe collection", move |c| async move {
            c.describe_collection(name)
                .await
                .map(|d| d.schema.description)
        })?;
        // A collection of this name but no stamp was made by something else: never reuse it.
        Ok(Stamp::read(&description))
    }
}

/// The column `name` of a query's answer.
pub(super) fn column<'a>(columns: &'a [FieldColumn], name: &str) -> Option<&'a ValueVec> {
    columns.iter().find(|c| c.name == name).map(|c| &c.value)
}

fn milvus_error(settings: &MilvusSettings, message: String) -> Error {
    Error::Backend {
        backend: "milvus".into(),
        url: settings.url.clone(),
        message,
    }
}

fn client_runtime(settings: &MilvusSettings) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("milvus-client")
        .enable_all()
        .build()
        .map_err(|e| milvus_error(settings, format!("cannot start the client runtime: {e}")))
}

/// The SDK's client, connected on `runtime` (its channel lives there).
fn connect_client(runtime: &tokio::runtime::Runtime, settings: &MilvusSettings) -> Result<Client> {
    let (tx, rx) = mpsc::channel();
    let url = settings.url.clone();
    runtime.spawn(async move {
        let _ = tx.send(Client::new(url).await);
    });
    rx.recv()
        .map_err(|_| milvus_error(settings, "the client runtime stopped".into()))?
        .map_err(|e| milvus_error(settings, format!("cannot connect: {e}")))
}
