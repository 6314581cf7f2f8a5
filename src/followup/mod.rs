//! The same lesion across a patient's studies and what became of similar lesions.
//!
//! - [`features`]: what a lesion and a candidate are compared on.
//! - [`matcher`]: the fitted conditional logit that ranks a study's candidates with a
//!   probability and a "not in this study" alternative (weights in `data/followup/`).
//! - [`fit`]: fitting it on real pairs, choosing its threshold, cross-validating.
//! - [`table`]: pairs resolved in a `DL_info.csv` table (fitting and `eval-followup`).
//! - [`outlook`]: the courses of the most similar other lesions (`eval-outlook`).

pub mod features;
pub mod fit;
pub mod matcher;
pub mod outlook;
pub mod table;

pub use features::{pair_features, with_appearance, Features, FEATURES, FEATURE_NAMES};
pub use matcher::{MatcherModel, Provenance, Ranked, StudyMatch};
pub use outlook::{
    evaluate_outlook, fit_outlook, outlook, Course, LesionProfile, Outlook, OutlookEvaluation,
    OutlookModel, Shares, SimilarCourse, Trajectory,
};
pub use table::{evaluate, fit_matcher, FollowUpEvaluation, LesionTable};
