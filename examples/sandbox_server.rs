//! A bare sandbox server for benchmarks and manual poking, independent of the
//! CLI: `cargo run --release --example sandbox_server -- [--listen ADDR]`.
//! Defaults to `127.0.0.1:8787` and the default credentials; stops on Ctrl-C.

use std::net::SocketAddr;

use connect_provision::sandbox::{Sandbox, SandboxConfig};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8787));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(addr)) => {
                listen = addr.parse().map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("--listen {addr}: {e}"),
                    )
                })?;
            }
            _ => {
                eprintln!("usage: sandbox_server [--listen ADDR]");
                std::process::exit(2);
            }
        }
    }
    let sandbox = Sandbox::start(SandboxConfig::default(), listen).await?;
    println!("sandbox listening on {}", sandbox.url());
    tokio::signal::ctrl_c().await?;
    sandbox.shutdown().await;
    Ok(())
}
