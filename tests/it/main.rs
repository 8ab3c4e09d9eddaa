mod cli;
mod dry_run;
mod engine;
mod engine_parts;
mod props;
mod resume;
mod sandbox;
mod util;
