//! One module per command: the glue between settings and the library stages.

pub mod run;
