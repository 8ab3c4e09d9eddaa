//! `check`: get one token from the target and report its expiry; creates nothing.

use crate::api::client::ConnectClient;
use crate::error::Error;
use crate::exit::Exit;
use crate::settings::CheckSettings;

/// Returns the exit code: 0 when a token was issued, 3 when refused or unreachable.
pub(crate) async fn check(settings: &CheckSettings) -> Result<Exit, Error> {
    let (remote, sandbox) =
        crate::cmd::target::remote(&settings.target, settings.credentials.as_ref()).await?;
    let client = ConnectClient::new(&remote.base_url, remote.credentials, settings.timeout)
        .map_err(|e| Error::Fatal(crate::error::chain(&e)))?;
    let result = client.fetch_token().await;
    if let Some(sb) = sandbox {
        sb.shutdown().await;
    }
    match result {
        Ok(token) => {
            let expires = jiff::Timestamp::now()
                + jiff::SignedDuration::try_from(token.expires_in).unwrap_or_default();
            println!(
                "ok: {} issued a token for client '{}', valid for {} (until {})",
                remote.label,
                client_id_of(settings),
                humantime::format_duration(token.expires_in),
                expires.round(jiff::Unit::Second).unwrap_or(expires)
            );
            Ok(Exit::Success)
        }
        Err(e) => Err(Error::Fatal(format!(
            "{}: {}",
            remote.label,
            crate::error::chain(&e)
        ))),
    }
}

fn client_id_of(settings: &CheckSettings) -> &str {
    settings
        .credentials
        .as_ref()
        .map_or("sandbox-client", |c| c.client_id.as_str())
}
