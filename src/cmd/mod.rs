//! One module per command: the glue between settings and the library stages.

pub mod check;
pub mod run;
pub mod sandbox;
pub mod signals;
pub mod state;
pub mod target;
