//! What `add` and `delete` print about the generation they published.

use lesion_search::archive::ChangeSummary;

pub fn print_change(verb: &str, index: &std::path::Path, summary: &ChangeSummary) {
    for (id, key) in &summary.changed {
        println!("{verb} {key} (id {id})");
    }
    println!(
        "generation {} of {} published: {} lesions searchable{}",
        summary.generation,
        index.display(),
        summary.live,
        if summary.graph_rebuilt {
            format!(
                "; HNSW graph rebuilt (ef {}, self-recall {:.3})",
                summary.ef, summary.self_recall
            )
        } else {
            String::new()
        }
    );
}
