mod engine_parts;
mod sandbox;
