//! Provider configuration: where the server is and how to trust and authenticate to it.

use strongbox_client::{Client, ClientConfig};

use crate::core::{Attr, Diag, Diags, ObjExt, TfSchema};
use crate::value::Value;

/// The `provider "strongbox"` block.
pub fn schema() -> TfSchema {
    TfSchema {
        version: 0,
        description:
            "Strongbox: secrets and keys. Every attribute can come from the environment instead."
                .into(),
        attrs: vec![
            Attr::optional("address", super::string())
                .describe("`https://host:port` of the Strongbox server; default (also when empty) `STRONGBOX_ADDR`."),
            Attr::optional("token", super::string())
                .sensitive()
                .describe("Bearer token; default (also when empty) `STRONGBOX_TOKEN`."),
            Attr::optional("ca_cert", super::string())
                .describe("PEM of the CA that signed the server certificate (empty: unset)."),
            Attr::optional("ca_cert_file", super::string())
                .describe("Path of that PEM; default (also when empty) `STRONGBOX_CACERT`."),
        ],
    }
}

/// Static checks.
pub fn validate(config: &Value) -> Diags {
    let mut d = Vec::new();
    let set = |a: &str| config.str_attr(a).is_some_and(|v| !v.is_empty());
    if set("ca_cert") && set("ca_cert_file") {
        d.push(
            Diag::error(
                "Conflicting CA settings",
                "set ca_cert or ca_cert_file, not both",
            )
            .at("ca_cert"),
        );
    }
    if let Some(a) = config.str_attr("address")
        && !a.is_empty()
        && !a.starts_with("https://")
    {
        d.push(
            Diag::error(
                "Invalid address",
                format!(
                    "address must start with https:// (got {})",
                    strongbox_client::address_for_display(a)
                ),
            )
            .at("address"),
        );
    }
    d
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A setting from the provider block, else from the environment. An empty string in the
/// block (`token = var.t` whose default is `""`) is unset, as an empty variable in the
/// environment is, not a value to send.
fn chosen(in_block: Option<&str>, from_env: impl FnOnce() -> Option<String>) -> Option<String> {
    in_block
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .or_else(from_env)
}

/// An error for each setting whose value is known only after apply. Such a setting is
/// set, not unset: falling back to the environment would plan against another server
/// or as another caller. A plan goes on without the server (resources to create plan
/// without it); what needs the server (refreshing existing resources, data sources)
/// fails with these.
pub fn unknown_settings(config: &Value) -> Diags {
    ["address", "token", "ca_cert", "ca_cert_file"]
        .into_iter()
        .filter(|a| config.attr(a).is_unknown())
        .map(|a| {
            Diag::error(
                "Provider configuration not known yet",
                format!(
                    "{a} depends on a value known only after apply, and this needs the server; give the provider values known at plan time, or apply what it depends on first (terraform apply -target=…)"
                ),
            )
            .at(a)
        })
        .collect()
}

/// Builds the API client from configuration and environment.
pub fn client(config: &Value) -> Result<Client, Diags> {
    let d = validate(config);
    if !d.is_empty() {
        return Err(d);
    }
    let unknown = unknown_settings(config);
    if !unknown.is_empty() {
        return Err(unknown);
    }
    let address =
        chosen(config.str_attr("address"), || env("STRONGBOX_ADDR")).ok_or_else(|| {
            vec![
                Diag::error(
                    "Missing address",
                    "set address in the provider block or STRONGBOX_ADDR",
                )
                .at("address"),
            ]
        })?;
    let token = chosen(config.str_attr("token"), || env("STRONGBOX_TOKEN")).ok_or_else(|| {
        vec![
            Diag::error(
                "Missing token",
                "set token in the provider block or STRONGBOX_TOKEN",
            )
            .at("token"),
        ]
    })?;
    // Empty means unset, as for address and token (a variable that defaults to "").
    let ca_cert_pem = match (
        config.str_attr("ca_cert").filter(|v| !v.is_empty()),
        chosen(config.str_attr("ca_cert_file"), || env("STRONGBOX_CACERT")),
    ) {
        (Some(pem), _) => Some(pem.as_bytes().to_vec()),
        (None, Some(path)) => Some(std::fs::read(&path).map_err(|e| {
            vec![
                Diag::error("Cannot read the CA certificate", format!("{path}: {e}"))
                    .at("ca_cert_file"),
            ]
        })?),
        (None, None) => None,
    };
    Client::new(ClientConfig {
        address,
        token,
        ca_cert_pem,
        timeout: None,
    })
    .map_err(|e| vec![Diag::error("Invalid provider configuration", e.to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::null_object;

    #[test]
    fn an_empty_setting_in_the_block_is_unset() {
        let env = || Some("from-env".to_string());
        assert_eq!(chosen(Some(""), env).as_deref(), Some("from-env"));
        assert_eq!(chosen(Some("block"), env).as_deref(), Some("block"));
        assert_eq!(chosen(None, env).as_deref(), Some("from-env"));
        assert_eq!(chosen(Some(""), || None), None);
    }

    /// An empty CA setting is unset: beside the other one it is no conflict, and an
    /// empty path is not read.
    #[test]
    fn an_empty_ca_setting_is_unset() {
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()])
            .map(|c| c.cert.pem())
            .unwrap_or_default();
        let mut config = null_object(&schema());
        config.set("address", Value::string("https://127.0.0.1:1"));
        config.set("token", Value::string("t"));
        config.set("ca_cert", Value::string(&ca));
        config.set("ca_cert_file", Value::string(""));
        assert!(validate(&config).is_empty());
        assert!(client(&config).is_ok());
        config.set("ca_cert_file", Value::string("/nonexistent/ca.pem"));
        assert_eq!(validate(&config).len(), 1, "both set");
    }

    /// An unknown attribute is an error naming it, never a reason to use the
    /// environment's server or token.
    #[test]
    fn unknown_configuration_is_refused_not_replaced_by_the_environment() {
        let mut config = null_object(&schema());
        config.set("address", Value::string("https://127.0.0.1:1"));
        config.set("token", Value::unknown());
        let d = client(&config).expect_err("refused");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].summary, "Provider configuration not known yet");
        assert!(
            d[0].detail.starts_with("token depends on"),
            "{}",
            d[0].detail
        );
    }
}
