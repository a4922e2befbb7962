//! Access policies: named RAM-style documents attached to principals.

use strongbox_schemas::{self as api, ErrorCode, validate_policy_name};

use super::Service;
use super::identity::{AccessPolicyRecord, builtin_policy};
use super::records::{
    collect_after, decode, decode_page_token, encode, load, page, refuse_in_use,
    validate_description,
};
use crate::error::{Error, Result};
use crate::storage::{Reader, Table};

fn policy_not_found(name: &str) -> Error {
    Error::new(
        ErrorCode::PolicyNotFound,
        format!("policy {name} not found"),
    )
}

fn builtin(name: &str) -> Error {
    Error::new(
        ErrorCode::InvalidState,
        format!("policy {name} is built in and cannot be changed or deleted"),
    )
}

fn builtin_api(name: &str) -> Option<api::Policy> {
    builtin_policy(name).map(|document| api::Policy {
        name: name.to_string(),
        arn: format!("strongbox:ram:policy/{name}"),
        description: "Built in: every action on every resource".into(),
        document: Some(document),
        builtin: true,
        creation_date: api::Timestamp::from_unix(0),
        update_date: api::Timestamp::from_unix(0),
    })
}

fn load_policy(r: &(impl Reader + ?Sized), name: &str) -> Result<AccessPolicyRecord> {
    load(r, Table::AccessPolicies, name.as_bytes())?.ok_or_else(|| policy_not_found(name))
}

impl Service {
    /// Creates an access policy.
    pub async fn create_policy(&self, req: api::CreatePolicyRequest) -> Result<api::Policy> {
        validate_policy_name("name", &req.name)?;
        let description = req.description.unwrap_or_default();
        validate_description(&description)?;
        let now = self.now();
        self.write_access(move |t| {
            if builtin_policy(&req.name).is_some()
                || t.get(Table::AccessPolicies, req.name.as_bytes())?.is_some()
            {
                return Err(Error::new(
                    ErrorCode::AlreadyExists,
                    format!("policy {} already exists", req.name),
                ));
            }
            let rec = AccessPolicyRecord {
                name: req.name,
                description,
                document: req.document,
                creation_date: now,
                update_date: now,
            };
            t.put(Table::AccessPolicies, rec.name.as_bytes(), encode(&rec));
            Ok(rec.to_api())
        })
        .await
    }

    /// One policy (built in or stored).
    pub fn describe_policy(&self, name: &str) -> Result<api::Policy> {
        if let Some(p) = builtin_api(name) {
            return Ok(p);
        }
        Ok(load_policy(self.store(), name)?.to_api())
    }

    /// Policies in name order whose names pass `visible`, built-in ones included, a
    /// page at a time.
    pub fn list_policies(
        &self,
        limit: usize,
        page_token: Option<&str>,
        visible: &dyn Fn(&str) -> bool,
    ) -> Result<api::ListPoliciesResponse> {
        let after = decode_page_token(page_token)?;
        let mut items = collect_after(
            self.store(),
            Table::AccessPolicies,
            b"",
            after.as_deref(),
            limit.saturating_add(1),
            |_, v| {
                let p: AccessPolicyRecord = decode(v)?;
                Ok(visible(&p.name).then(|| (p.name.clone(), p.to_api())))
            },
        )?;
        items.extend(
            builtin_api(api::ADMINISTRATOR_ACCESS)
                .filter(|p| visible(&p.name) && after.as_ref().is_none_or(|a| p.name > *a))
                .map(|p| (p.name.clone(), p)),
        );
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let (policies, next_page_token) = page(items, limit);
        Ok(api::ListPoliciesResponse {
            policies,
            next_page_token,
        })
    }

    /// Changes a policy; every principal it is attached to is governed by the new
    /// document from its next request on.
    pub async fn update_policy(
        &self,
        name: &str,
        req: api::UpdatePolicyRequest,
    ) -> Result<api::Policy> {
        if let Some(d) = &req.description {
            validate_description(d)?;
        }
        let (name, now) = (name.to_string(), self.now());
        self.write_access(move |t| {
            if builtin_policy(&name).is_some() {
                return Err(builtin(&name));
            }
            let mut p = load_policy(t, &name)?;
            if let Some(d) = req.description {
                p.description = d;
            }
            if let Some(doc) = req.document {
                p.document = doc;
            }
            p.update_date = now;
            t.put(Table::AccessPolicies, name.as_bytes(), encode(&p));
            Ok(p.to_api())
        })
        .await
    }

    /// Deletes a policy no principal uses.
    pub async fn delete_policy(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write_access(move |t| {
            if builtin_policy(&name).is_some() {
                return Err(builtin(&name));
            }
            load_policy(t, &name)?;
            refuse_in_use(
                t,
                Table::PolicyPrincipals,
                &name,
                ErrorCode::PolicyInUse,
                &format!("policy {name}"),
                "principal",
            )?;
            t.delete(Table::AccessPolicies, name.as_bytes());
            Ok(())
        })
        .await
    }
}
