//! Turning a settings target into something to send to: a URL and
//! credentials, starting the embedded sandbox for `--sandbox`.

use std::net::{Ipv4Addr, SocketAddr};

use crate::api::Remote;
use crate::api::client::{BaseUrl, Credentials};
use crate::error::Error;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::settings::{self, Target};

/// The remote for `target`; for `--sandbox` also the running sandbox, which
/// the caller shuts down when done.
pub(crate) async fn remote(
    target: &Target,
    credentials: Option<&Credentials>,
) -> Result<(Remote, Option<Sandbox>), Error> {
    match target {
        Target::Sandbox => {
            let cfg = SandboxConfig::default();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            let sandbox = Sandbox::start(cfg.clone(), addr)
                .await
                .map_err(|source| Error::Sandbox { addr, source })?;
            let base_url =
                BaseUrl::parse(&sandbox.url()).map_err(|e| Error::Fatal(e.to_string()))?;
            let remote = Remote {
                base_url,
                credentials: Credentials {
                    client_id: cfg.client_id.clone(),
                    client_secret: cfg.client_secret.clone().into(),
                    scope: Some("connect:fulfillment".into()),
                },
                label: format!("embedded sandbox at {}", sandbox.url()),
            };
            tracing::info!(url = %sandbox.url(), "embedded sandbox started");
            Ok((remote, Some(sandbox)))
        }
        Target::Url(url) => {
            let c = credentials.ok_or(settings::ConfigError::NoClientId)?;
            Ok((
                Remote {
                    base_url: url.clone(),
                    credentials: c.clone(),
                    label: url.to_string(),
                },
                None,
            ))
        }
    }
}
