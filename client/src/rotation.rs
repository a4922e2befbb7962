//! Rotation: rotate a secret now, and the password generator.

use reqwest::Method;
use strongbox_schemas as api;

use crate::{Client, Result};

/// How long [`Client::rotate_secret`] waits for the answer.
const ROTATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(75);

impl Client {
    /// Rotates a secret now with its policy's strategy and waits for the rotation to
    /// finish. With `version_id`, repeating the call waits for (or returns) that same
    /// rotation instead of starting another.
    pub async fn rotate_secret(
        &self,
        name: &str,
        version_id: Option<&str>,
    ) -> Result<api::RotateSecretResponse> {
        let req = api::RotateSecretRequest {
            version_id: version_id.map(str::to_string),
        };
        // The server answers within its `rotate_wait` (60 s by default, then 503 while
        // the rotation goes on): wait at least that long, whatever the client's usual
        // timeout, so the caller learns why a slow rotation failed.
        self.send(
            self.req(Method::POST, &["v1", "secrets", name, "rotate"])
                .json(&req)
                .timeout(self.timeout.max(ROTATE_TIMEOUT)),
        )
        .await
    }

    /// A password from the server's generator. `rules` are query parameters of
    /// `GET /v1/random-password`: `length` (8–128), `exclude_characters`,
    /// `exclude_lowercase`, `exclude_uppercase`, `exclude_numbers`,
    /// `exclude_punctuation`, `require_each_included_type` (`true`/`false`).
    pub async fn random_password(&self, rules: &[(&str, &str)]) -> Result<String> {
        let p: api::RandomPassword = self
            .send(
                self.req(Method::GET, &["v1", "random-password"])
                    .query(rules),
            )
            .await?;
        Ok(p.random_password)
    }
}
