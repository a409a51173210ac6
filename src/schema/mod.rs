//! Streams' schemas: how they are declared (`parse`), what they compile to (`types`), how
//! events are checked against them and turned into Arrow columns (`decode`, `columns`), and
//! where they are kept (`registry`).

pub mod columns;
pub mod decode;
pub mod parse;
pub mod pattern;
pub mod registry;
pub mod types;
pub mod values;
