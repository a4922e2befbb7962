//! The route-table test: built from the server's own table, so a new route fails here
//! until it has a case. For every route: without a token → 401; a principal allowed
//! everything but the route's action → 403; one allowed the action on another resource
//! → 403; one allowed exactly that action on exactly that resource → success. Every one
//! of these requests leaves exactly one audit record naming principal, action, resource
//! and outcome.

use serde_json::{Value, json};
use strongbox_schemas::{AuditOutcome, ErrorCode};
use strongbox_server::api::{ResourceRule, RouteSpec, route_table};

use crate::common::*;

/// A request that exercises one route, and the resource it must be authorized against.
struct Case {
    segments: Vec<String>,
    body: Option<Value>,
    resource: String,
    /// Resources the service checks the action on as well (delegated checks), which
    /// the exactly-allowed principal is granted too.
    also: Vec<String>,
    /// Other actions the service checks (on resources of their own), granted to the
    /// exactly-allowed principal too.
    also_actions: Vec<(String, String)>,
}

impl Case {
    fn new(segments: &[&str], body: Option<Value>, resource: &str) -> Self {
        Self {
            segments: segments.iter().map(|s| s.to_string()).collect(),
            body,
            resource: resource.into(),
            also: Vec::new(),
            also_actions: Vec::new(),
        }
    }

    fn also_action(mut self, action: &str, resource: String) -> Self {
        self.also_actions.push((action.into(), resource));
        self
    }

    fn also(mut self, resource: String) -> Self {
        self.also.push(resource);
        self
    }
}

async fn new_secret(s: &TestServer, name: &str) -> String {
    s.client
        .create_secret(&text_secret(name, "value"))
        .await
        .unwrap()
        .version_id
}

/// Prepares what the route needs (with the root client) and describes the request.
async fn prepare(s: &TestServer, r: &RouteSpec, n: usize) -> Case {
    let c = &s.client;
    let secret = format!("rt/s{n}");
    let sres = format!("secret/{secret}");
    let (alias, pol, user, doc) = (
        format!("alias/rt{n}"),
        format!("rt-p{n}"),
        format!("rt-u{n}"),
        format!("rt-d{n}"),
    );
    let policy_doc = json!({"Version": "1", "Statement": [{"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"}]});
    match (r.method, r.path) {
        ("GET", "/v1/openapi.json") => Case::new(&["v1", "openapi.json"], None, "*"),
        ("GET", "/metrics") => Case::new(&["metrics"], None, "*"),
        ("POST", "/v1/keys") => Case::new(&["v1", "keys"], Some(json!({})), "key/*"),
        ("GET", "/v1/keys") => Case::new(&["v1", "keys"], None, "*"),
        ("GET" | "PATCH", "/v1/keys/{key_id}") => {
            let k = new_key(s).await;
            let body = (r.method == "PATCH").then(|| json!({"description": "changed"}));
            Case::new(&["v1", "keys", &k], body, &format!("key/{k}"))
        }
        ("POST", p) if p.starts_with("/v1/keys/{key_id}/") => {
            let k = new_key(s).await;
            let verb = p.rsplit('/').next().unwrap();
            if verb == "cancel-deletion" {
                c.schedule_key_deletion(&k, None).await.unwrap();
            }
            let body = match verb {
                "schedule-deletion" => Some(json!({"pending_window_in_days": 7})),
                "encrypt" => Some(json!({"plaintext": "aGVsbG8="})),
                "decrypt" => {
                    let made = c.encrypt(&k, b"hello", &Default::default()).await.unwrap();
                    Some(json!({"ciphertext_blob": made.ciphertext_blob}))
                }
                "re-encrypt" => {
                    // From another key, which needs kms:ReEncryptFrom.
                    let source = new_key(s).await;
                    let made = c
                        .encrypt(&source, b"hello", &Default::default())
                        .await
                        .unwrap();
                    return Case::new(
                        &["v1", "keys", &k, verb],
                        Some(json!({"ciphertext_blob": made.ciphertext_blob})),
                        &format!("key/{k}"),
                    )
                    .also_action("kms:ReEncryptFrom", format!("key/{source}"));
                }
                _ => None,
            };
            Case::new(&["v1", "keys", &k, verb], body, &format!("key/{k}"))
        }
        ("GET", "/v1/aliases") => Case::new(&["v1", "aliases"], None, "*"),
        ("PUT", "/v1/aliases/{alias}") => {
            let k = new_key(s).await;
            Case::new(
                &["v1", "aliases", &alias],
                Some(json!({"key_id": k})),
                &alias,
            )
            .also(format!("key/{k}"))
        }
        ("GET", "/v1/aliases/{alias}") => {
            let k = new_key(s).await;
            c.put_alias(&alias, &k).await.unwrap();
            Case::new(&["v1", "aliases", &alias], None, &alias)
        }
        // As in KMS, deleting an alias also needs the right on the key it names.
        ("DELETE", "/v1/aliases/{alias}") => {
            let k = new_key(s).await;
            c.put_alias(&alias, &k).await.unwrap();
            Case::new(&["v1", "aliases", &alias], None, &alias).also(format!("key/{k}"))
        }
        ("POST", "/v1/secrets") => Case::new(
            &["v1", "secrets"],
            Some(json!({"name": secret, "secret_data": "v"})),
            &sres,
        ),
        ("GET", "/v1/secrets") => Case::new(&["v1", "secrets"], None, "*"),
        ("GET" | "PATCH" | "DELETE", "/v1/secrets/{name}") => {
            new_secret(s, &secret).await;
            let body = (r.method == "PATCH").then(|| json!({"description": "changed"}));
            Case::new(&["v1", "secrets", &secret], body, &sres)
        }
        (m, p) if p.starts_with("/v1/secrets/{name}/") => {
            let tail = p.rsplit('/').next().unwrap();
            if tail == "rotate" {
                // A secret with a rotation policy the server can carry out by itself.
                c.create_rotation_policy(
                    &serde_json::from_value(
                        json!({"name": pol, "interval": "30d", "strategy": "random"}),
                    )
                    .unwrap(),
                )
                .await
                .unwrap();
                let mut req = text_secret(&secret, "value");
                req.rotation_policy = Some(pol.clone());
                c.create_secret(&req).await.unwrap();
                return Case::new(&["v1", "secrets", &secret, tail], None, &sres);
            }
            let version = new_secret(s, &secret).await;
            let body = match (m, tail) {
                ("POST", "versions") => Some(json!({"secret_data": "v2"})),
                ("POST", "stages") => {
                    Some(json!({"version_stage": "Blue", "move_to_version": version}))
                }
                ("POST", "restore") => {
                    c.delete_secret(&secret, Default::default()).await.unwrap();
                    None
                }
                _ => None,
            };
            Case::new(&["v1", "secrets", &secret, tail], body, &sres)
        }
        ("POST", "/v1/rotation-policies") => Case::new(
            &["v1", "rotation-policies"],
            Some(json!({"name": pol, "interval": "30d", "strategy": "random"})),
            &format!("rotation-policy/{pol}"),
        ),
        ("GET", "/v1/rotation-policies") => Case::new(&["v1", "rotation-policies"], None, "*"),
        (m, "/v1/rotation-policies/{name}") => {
            c.create_rotation_policy(
                &serde_json::from_value(
                    json!({"name": pol, "interval": "30d", "strategy": "random"}),
                )
                .unwrap(),
            )
            .await
            .unwrap();
            let body = (m == "PATCH").then(|| json!({"enabled": false}));
            Case::new(
                &["v1", "rotation-policies", &pol],
                body,
                &format!("rotation-policy/{pol}"),
            )
        }
        ("POST", "/v1/principals") => Case::new(
            &["v1", "principals"],
            Some(json!({"name": user})),
            &format!("principal/{user}"),
        ),
        ("GET", "/v1/principals") => Case::new(&["v1", "principals"], None, "*"),
        (m, p) if p.starts_with("/v1/principals/{name}") => {
            c.create_principal(&strongbox_schemas::CreatePrincipalRequest {
                name: user.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
            let res = format!("principal/{user}");
            match (m, p) {
                ("PATCH", _) => Case::new(
                    &["v1", "principals", &user],
                    Some(json!({"description": "changed"})),
                    &res,
                ),
                (_, "/v1/principals/{name}") => Case::new(&["v1", "principals", &user], None, &res),
                ("POST", _) => Case::new(
                    &["v1", "principals", &user, "tokens"],
                    Some(json!({"description": "route test"})),
                    &res,
                ),
                ("GET", _) => Case::new(&["v1", "principals", &user, "tokens"], None, &res),
                _ => {
                    let t = c.create_token(&user, &Default::default()).await.unwrap();
                    Case::new(
                        &["v1", "principals", &user, "tokens", &t.token_id],
                        None,
                        &res,
                    )
                }
            }
        }
        ("POST", "/v1/policies") => Case::new(
            &["v1", "policies"],
            Some(json!({"name": doc, "document": policy_doc})),
            &format!("policy/{doc}"),
        ),
        ("GET", "/v1/policies") => Case::new(&["v1", "policies"], None, "*"),
        (m, "/v1/policies/{name}") => {
            c.create_policy(&strongbox_schemas::CreatePolicyRequest {
                name: doc.clone(),
                description: None,
                document: serde_json::from_value(policy_doc).unwrap(),
            })
            .await
            .unwrap();
            let body = (m == "PATCH").then(|| json!({"description": "changed"}));
            Case::new(&["v1", "policies", &doc], body, &format!("policy/{doc}"))
        }
        ("GET", "/v1/random-password") => Case::new(&["v1", "random-password"], None, "*"),
        ("GET", "/v1/audit") => Case::new(&["v1", "audit"], None, "*"),
        ("GET", "/v1/audit/verify") => Case::new(&["v1", "audit", "verify"], None, "*"),
        ("POST", "/v1/audit/prune") => Case::new(
            &["v1", "audit", "prune"],
            Some(json!({"older_than": "30d"})),
            "*",
        ),
        ("GET", "/v1/backup") => Case::new(&["v1", "backup"], None, "*"),
        (m, p) => panic!("route {m} {p} has no case in the route-table test: add one"),
    }
}

fn other_resource(resource: &str) -> String {
    if resource.contains('*') {
        "secret/zzz-other".into()
    } else {
        format!("{resource}-other")
    }
}

async fn check_record(
    s: &TestServer,
    reply: &Reply,
    principal: &str,
    r: &RouteSpec,
    resource: &str,
    outcome: AuditOutcome,
) {
    let recs = records_of(s, &reply.request_id).await;
    assert_eq!(
        recs.len(),
        1,
        "{} {}: one record per request, got {recs:?}",
        r.method,
        r.path
    );
    let rec = &recs[0];
    assert_eq!(
        (
            rec.principal.as_str(),
            rec.action.as_str(),
            rec.resource.as_str(),
            rec.outcome
        ),
        (principal, r.action, resource, outcome),
        "{} {}",
        r.method,
        r.path
    );
    assert!(rec.source.starts_with("127.0.0.1:"), "{rec:?}");
    assert_eq!(rec.user_agent, "route-table-test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_allows_exactly_its_action_on_exactly_its_resource() {
    // Every route is also asked without a token, one after another from one address:
    // more than its default allowance of such requests (api::throttle), which would
    // answer some with 429 unrecorded instead of the 401 and record this test checks.
    let s = TestServer::start_with_limits(strongbox_server::tls::ConnectionLimits {
        unauthenticated_per_second: 0,
        ..Default::default()
    })
    .await;
    let mut checked = 0;
    for (n, r) in route_table().iter().enumerate() {
        if r.action.is_empty() {
            // Public (health): no token, no policy, not audited.
            let reply = call(&s, None, r.method, &["v1", "health"], None).await;
            assert_eq!(reply.status, 200);
            assert!(records_of(&s, &reply.request_id).await.is_empty());
            continue;
        }
        let case = prepare(&s, r, n).await;
        let segs: Vec<&str> = case.segments.iter().map(String::as_str).collect();
        // The table forms the same resource as the test expects.
        let params: Vec<(&str, &str)> = r
            .path
            .split('/')
            .skip(1)
            .zip(segs.iter().copied())
            .filter_map(|(tpl, seg)| {
                tpl.strip_prefix('{')
                    .and_then(|t| t.strip_suffix('}'))
                    .map(|name| (name, seg))
            })
            .collect();
        assert_eq!(
            r.resource.resource(&params, case.body.as_ref()).as_deref(),
            Some(case.resource.as_str()),
            "{} {}",
            r.method,
            r.path
        );

        // No token: 401, recorded as anonymous.
        let reply = call(&s, None, r.method, &segs, case.body.as_ref()).await;
        assert_eq!(reply.status, 401, "{} {}", r.method, r.path);
        assert_eq!(reply.body["code"], "Unauthenticated");
        let expected = match r.resource {
            ResourceRule::Path(_) => case.resource.clone(),
            ResourceRule::Body(_) => String::new(),
        };
        check_record(&s, &reply, "anonymous", r, &expected, AuditOutcome::Denied).await;

        let deny_action = json!({"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": r.action, "Resource": "*"}]});
        let elsewhere = json!({"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": r.action, "Resource": other_resource(&case.resource)}]});
        let mut exact_resources = vec![case.resource.clone()];
        exact_resources.extend(case.also.iter().cloned());
        let mut exact_statements =
            vec![json!({"Effect": "Allow", "Action": r.action, "Resource": exact_resources})];
        for (action, resource) in &case.also_actions {
            exact_statements
                .push(json!({"Effect": "Allow", "Action": action, "Resource": resource}));
        }
        let exact = json!({"Version": "1", "Statement": exact_statements});
        for (who, doc, allowed) in [
            (format!("all-but-{n}"), deny_action, false),
            (format!("elsewhere-{n}"), elsewhere, false),
            (format!("exact-{n}"), exact, true),
        ] {
            let token = s.principal_token(&who, doc).await;
            let reply = call(&s, Some(&token), r.method, &segs, case.body.as_ref()).await;
            if allowed {
                assert!(
                    (200..300).contains(&reply.status),
                    "{who}: {} {} → {} {}",
                    r.method,
                    r.path,
                    reply.status,
                    reply.body
                );
                check_record(&s, &reply, &who, r, &case.resource, AuditOutcome::Succeeded).await;
            } else {
                assert_eq!(reply.status, 403, "{who}: {} {}", r.method, r.path);
                assert_eq!(reply.body["code"], "Forbidden");
                let msg = reply.body["message"].as_str().unwrap();
                assert!(
                    msg.contains(r.action) && msg.contains(&case.resource),
                    "403 names action and resource: {msg}"
                );
                check_record(&s, &reply, &who, r, &case.resource, AuditOutcome::Denied).await;
                let rec = &records_of(&s, &reply.request_id).await[0];
                assert_eq!(rec.error_code, Some(ErrorCode::Forbidden));
            }
        }
        checked += 1;
    }
    assert!(checked >= 45, "checked {checked} routes");
    let v = s.client.verify_audit().await.unwrap();
    assert!(v.intact, "{v:?}");
}
