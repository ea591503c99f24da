//! Every tree ensemble usan grows: isolation trees (the isolation forest
//! detector), gradient-boosted regression trees (remaining useful life,
//! yield) and extremely randomised trees (yield).

pub mod extra_trees;
pub mod gbdt;
pub(crate) mod isolation;
