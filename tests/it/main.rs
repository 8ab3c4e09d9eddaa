mod cli;
mod dry_run;
mod engine;
mod engine_parts;
mod props;
mod sandbox;
mod util;
