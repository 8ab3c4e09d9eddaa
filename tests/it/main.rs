mod engine_parts;
mod sandbox;
mod engine;
