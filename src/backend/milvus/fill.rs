//! A generation's collection written: its schema (vector, key, the filterable facts and,
//! for BM25, the report text), its rows in batches of columns, and its indexes.

use std::collections::HashMap;

use milvus::data::FieldColumn;
use milvus::index::{IndexParams, IndexType, MetricType};
use milvus::proto::schema::{FunctionSchema, FunctionType};
use milvus::schema::{CollectionSchema, CollectionSchemaBuilder, FieldSchema};

use super::expression::wire_name;
use super::stamp::{Stamp, MILVUS_BM25};
use super::Connection;
use crate::archive::Published;
use crate::error::Result;
use crate::index::VectorIndex;
use crate::store::StoredLesion;
use crate::text::document_text;

/// HNSW build parameters of every collection (Milvus' own recommendation for ~1M vectors).
const GRAPH_M: usize = 16;
const GRAPH_EF_CONSTRUCTION: usize = 200;
/// Longest report text a collection holds (Milvus' VarChar limit).
const MAX_REPORT_BYTES: usize = 65_535;
/// Bytes of vectors per insert request (the server's gRPC limit is 64 MiB).
const INSERT_BYTES: usize = 16 << 20;

impl Connection {
    /// Creates the collection `name`, stamped with `stamp`, inserts every live record of
    /// the generation with its vector, and builds its indexes; returns the rows written.
    pub(super) fn fill(
        &self,
        name: &str,
        stamp: &Stamp,
        published: &Published,
        vectors: &VectorIndex,
    ) -> Result<usize> {
        let dim = stamp.dim;
        if vectors.dim() != dim {
            return Err(self.error(format!(
                "the generation's vectors have {} dimensions, its model card {dim}",
                vectors.dim()
            )));
        }
        let bm25 = stamp.text == MILVUS_BM25;
        let schema = schema_of(name, stamp, bm25)
            .build()
            .map_err(|e| self.error(format!("collection schema: {e}")))?;
        let created = schema.clone();
        self.run("create collection", move |c| async move {
            c.create_collection(created, None).await.map(|_| ())
        })?;

        let all = published.records.all()?;
        let per_batch = (INSERT_BYTES / (dim * 4)).clamp(1, 8_192);
        for batch in all.chunks(per_batch) {
            let mut rows = Rows::with_capacity(batch.len(), dim, bm25);
            for (id, lesion) in batch {
                if *id as usize >= vectors.len() || vectors.is_deleted(*id) {
                    return Err(
                        self.error(format!("record {id} has no live vector in the generation"))
                    );
                }
                rows.push(*id, lesion, vectors.vector(*id));
            }
            let columns = rows.into_columns(&schema);
            let target = name.to_string();
            self.run("insert", move |c| async move {
                c.insert(target, columns, None).await.map(|_| ())
            })?;
        }
        let target = name.to_string();
        self.run("flush", move |c| async move { c.flush(target).await })?;
        self.create_indexes(name, stamp, bm25)?;
        Ok(all.len())
    }

    fn create_indexes(&self, name: &str, stamp: &Stamp, bm25: bool) -> Result<()> {
        let index = self.settings().index.for_rows(stamp.live);
        let build = match index {
            IndexType::HNSW => HashMap::from([
                ("M".to_string(), GRAPH_M.to_string()),
                (
                    "efConstruction".to_string(),
                    GRAPH_EF_CONSTRUCTION.to_string(),
                ),
            ]),
            _ => HashMap::new(),
        };
        // Named after the field, as Milvus names a default index (milvus-lite finds it only so).
        let params = IndexParams::new("vector".into(), index, MetricType::IP, build);
        let target = name.to_string();
        self.run("create index", move |c| async move {
            c.create_index(target, "vector", params).await
        })?;
        if bm25 {
            let params = IndexParams::new(
                "report_bm25".into(),
                IndexType::SparseInvertedIndex,
                MetricType::BM25,
                HashMap::new(),
            );
            let target = name.to_string();
            self.run("create text index", move |c| async move {
                c.create_index(target, "report_bm25", params).await
            })?;
        }
        Ok(())
    }
}

/// The collection's fields, its description the stamp.
fn schema_of(name: &str, stamp: &Stamp, bm25: bool) -> CollectionSchemaBuilder {
    let description = stamp.description();
    let mut schema = CollectionSchemaBuilder::new(name, &description);
    schema
        .add_field(FieldSchema::new_primary_int64(
            "lid",
            "dense lesion id",
            false,
        ))
        .add_field(FieldSchema::new_float_vector(
            "vector",
            "unit embedding",
            stamp.dim as i64,
        ))
        .add_field(FieldSchema::new_varchar(
            "key",
            "File_name and ordinal",
            512,
        ))
        .add_field(FieldSchema::new_int64("patient", "patient index"))
        .add_field(FieldSchema::new_varchar(
            "coarse_type",
            "coarse lesion type",
            32,
        ))
        .add_field(FieldSchema::new_varchar(
            "sex",
            "female, male or unknown",
            16,
        ))
        .add_field(FieldSchema::new_float("age", "years; -1 when unknown"))
        .add_field(FieldSchema::new_float("long_mm", "RECIST long diameter"))
        .add_field(FieldSchema::new_float("location_x", "normalized body x"))
        .add_field(FieldSchema::new_float("location_y", "normalized body y"))
        .add_field(FieldSchema::new_float("location_z", "normalized body z"))
        .add_field(FieldSchema::new_varchar(
            "split",
            "train, validation or test",
            16,
        ));
    if bm25 {
        add_report_fields(&mut schema);
    }
    schema
}

/// The report text, analysed for `TEXT_MATCH`, and its BM25 sparse vector, which Milvus
/// computes from it.
fn add_report_fields(schema: &mut CollectionSchemaBuilder) {
    schema
        .add_field(
            FieldSchema::new_varchar(
                "report",
                "report, tags and their ontology terms",
                MAX_REPORT_BYTES as i32,
            )
            .add_type_param("enable_analyzer", "true")
            .add_type_param("enable_match", "true")
            .add_type_param("analyzer_params", "{\"type\": \"english\"}"),
        )
        .add_field(FieldSchema::new_sparse_float_vector(
            "report_bm25",
            "BM25 of the report",
        ))
        .add_function(FunctionSchema {
            name: "report_bm25".into(),
            r#type: FunctionType::Bm25 as i32,
            input_field_names: vec!["report".into()],
            output_field_names: vec!["report_bm25".into()],
            ..Default::default()
        });
}

/// One insert request's rows, field by field.
struct Rows {
    lid: Vec<i64>,
    vector: Vec<f32>,
    key: Vec<String>,
    patient: Vec<i64>,
    coarse_type: Vec<String>,
    sex: Vec<String>,
    age: Vec<f32>,
    long_mm: Vec<f32>,
    location: [Vec<f32>; 3],
    split: Vec<String>,
    /// Only when the collection ranks report text.
    report: Option<Vec<String>>,
}

impl Rows {
    fn with_capacity(rows: usize, dim: usize, bm25: bool) -> Self {
        Rows {
            lid: Vec::with_capacity(rows),
            vector: Vec::with_capacity(rows * dim),
            key: Vec::with_capacity(rows),
            patient: Vec::with_capacity(rows),
            coarse_type: Vec::with_capacity(rows),
            sex: Vec::with_capacity(rows),
            age: Vec::with_capacity(rows),
            long_mm: Vec::with_capacity(rows),
            location: [Vec::new(), Vec::new(), Vec::new()],
            split: Vec::with_capacity(rows),
            report: bm25.then(|| Vec::with_capacity(rows)),
        }
    }

    fn push(&mut self, id: u32, lesion: &StoredLesion, vector: &[f32]) {
        let r = &lesion.record;
        self.lid.push(id as i64);
        self.vector.extend_from_slice(vector);
        self.key.push(lesion.key.clone());
        self.patient.push(r.patient as i64);
        self.coarse_type.push(wire_name(&r.coarse_type));
        self.sex.push(wire_name(&r.sex));
        self.age.push(r.age.unwrap_or(-1.0));
        self.long_mm.push(r.long_diameter_mm());
        self.location[0].push(r.location.x);
        self.location[1].push(r.location.y);
        self.location[2].push(r.location.z);
        self.split.push(wire_name(&r.split));
        if let Some(report) = &mut self.report {
            report.push(truncated(
                document_text(&lesion.report, &lesion.tags),
                MAX_REPORT_BYTES,
            ));
        }
    }

    fn into_columns(self, schema: &CollectionSchema) -> Vec<FieldColumn> {
        let field = |n: &str| schema.get_field(n).expect("field of the schema above");
        let [location_x, location_y, location_z] = self.location;
        let mut columns = vec![
            FieldColumn::new(field("lid"), self.lid),
            FieldColumn::new(field("vector"), self.vector),
            FieldColumn::new(field("key"), self.key),
            FieldColumn::new(field("patient"), self.patient),
            FieldColumn::new(field("coarse_type"), self.coarse_type),
            FieldColumn::new(field("sex"), self.sex),
            FieldColumn::new(field("age"), self.age),
            FieldColumn::new(field("long_mm"), self.long_mm),
            FieldColumn::new(field("location_x"), location_x),
            FieldColumn::new(field("location_y"), location_y),
            FieldColumn::new(field("location_z"), location_z),
            FieldColumn::new(field("split"), self.split),
        ];
        if let Some(report) = self.report {
            columns.push(FieldColumn::new(field("report"), report));
        }
        columns
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_cut_at_a_character_boundary() {
        assert_eq!(truncated("aé".into(), 2), "a");
    }
}
