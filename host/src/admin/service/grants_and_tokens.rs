//! Granting a binding (for the component deployed now) and creating API
//! tokens, shown once.

use super::*;

impl Admin {
    pub(super) fn grant(
        &self,
        function: String,
        binding: String,
        body: GrantBody,
        record: &AdminRecord,
    ) -> Result<Granted, AdminError> {
        valid_name("binding", &binding)?;
        if body.allow.is_empty() {
            return Err(AdminError::bad_request(
                "name at least one operation to allow (hmac, sign, seal, inject, reveal)",
            ));
        }
        let injects = body.allow.contains(Operation::Inject);
        match (body.egress.is_empty(), injects) {
            (true, true) => {
                return Err(AdminError::bad_request(
                    "`inject` needs --egress: the hosts the secret may be sent to, e.g. --egress api.example.com",
                ));
            }
            (false, false) => {
                return Err(AdminError::bad_request(
                    "--egress applies only to the `inject` operation; add it to --allow or drop --egress",
                ));
            }
            _ => {}
        }
        let functions = self.store.functions().map_err(from_store)?;
        let Some(info) = functions.iter().find(|f| f.name == function) else {
            return Err(AdminError::new(
                ErrorKind::NotFound,
                format!("no function named `{function}` is deployed (see `keyhole functions`)"),
            ));
        };
        let Some(requested) = info.bindings.iter().find(|b| b.binding == binding) else {
            let known: Vec<&str> = info.bindings.iter().map(|b| b.binding.as_str()).collect();
            return Err(AdminError::new(
                ErrorKind::Conflict,
                format!(
                    "function `{function}` does not request binding `{binding}` in its manifest (it requests: {})",
                    if known.is_empty() {
                        "nothing".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        let requested = requested.operations;
        if let Some(expected) = &body.digest {
            check_digest_prefix(expected)?;
        }
        if let Some(expected) = &body.digest
            && !info
                .component_sha256
                .starts_with(&expected.to_ascii_lowercase())
        {
            return Err(from_store(StoreError::DigestMismatch {
                function,
                expected: expected.clone(),
                actual: info.component_sha256.clone(),
            }));
        }
        let grant = Grant {
            digest: info.component_sha256.clone(),
            function,
            binding,
            secret: body.secret,
            allow: body.allow,
            egress: body.egress,
            follow_redeploys: body.follow_redeploys,
        };
        self.store.grant(&grant, record).map_err(from_store)?;
        Ok(Granted { grant, requested })
    }

    pub(super) fn create_token(
        &self,
        caller: &Caller,
        body: CreateToken,
        record: &AdminRecord,
    ) -> Result<CreatedToken, AdminError> {
        if body.role != Role::Deployer && !body.functions.is_unlimited() {
            return Err(AdminError::bad_request(
                "--functions limits deployer tokens only; drop it or use --role deployer",
            ));
        }
        if body.role != Role::Deployer && !body.routes.is_unlimited() {
            return Err(AdminError::bad_request(
                "--routes limits deployer tokens only; drop it or use --role deployer",
            ));
        }
        let expires_at = match body.expires_secs {
            Some(secs) if secs <= 0 => {
                return Err(AdminError::bad_request(
                    "`expires_secs` must be at least one second",
                ));
            }
            Some(secs) => Some(now().saturating_add(secs)),
            None => None,
        };
        let new = NewToken::generate();
        let name = body
            .name
            .unwrap_or_else(|| format!("{}-{}", body.role, &new.id[..8]));
        valid_name("token", &name)?;
        let info = TokenInfo {
            id: new.id.clone(),
            name,
            role: body.role,
            functions: body.functions,
            routes: body.routes,
            created_at: now(),
            expires_at,
            revoked_at: None,
            created_by: caller.name().to_owned(),
        };
        self.store
            .create_token(&info, &new.hash, record)
            .map_err(from_store)?;
        Ok(CreatedToken {
            info,
            token: new.token.to_string(),
        })
    }
}
