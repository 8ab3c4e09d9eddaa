//! One module per command: the glue between settings and the library stages.

pub(crate) mod check;
pub(crate) mod docs;
pub(crate) mod run;
pub(crate) mod sandbox;
pub(crate) mod signals;
pub(crate) mod state;
mod target;
