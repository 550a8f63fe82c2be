//! Administering a node: every change and every read an operator,
//! deployer or auditor can make, checked against the caller's role and
//! recorded in the audit trail.
//!
//! [`Admin::handle`] is the one entry point. The HTTP admin listener
//! ([`http`]) calls it for token bearers; the CLI calls it directly with
//! [`Caller::Local`] when it works on the data directory. Both get the same
//! JSON reply ([`types`]), so the CLI prints the same thing either way.

pub mod access;
pub mod http;
mod service;
pub(crate) mod slots;
pub mod tls;
pub mod types;
pub mod wire;

pub use service::Admin;

use crate::admin::access::{Caller, Permission};
use crate::audit::Query;
use types::{ApproveBody, CreateToken, Deploy, GrantBody, PutSecret, Rollback, RotateSecret};

/// One admin request.
#[derive(Debug)]
pub enum Request {
    /// Store a secret or a new version of it.
    PutSecret {
        /// The secret.
        name: String,
        /// Value, kind, maximum age.
        body: PutSecret,
    },
    /// Store a new version of an existing secret.
    RotateSecret {
        /// The secret.
        name: String,
        /// Value, grace, maximum age.
        body: RotateSecret,
    },
    /// List secrets.
    ListSecrets,
    /// List a secret's versions.
    Versions {
        /// The secret.
        name: String,
    },
    /// Make an earlier version current.
    Rollback {
        /// The secret.
        name: String,
        /// Target version and grace.
        body: Rollback,
    },
    /// Grants naming a secret, with last uses.
    Dependents {
        /// The secret.
        name: String,
    },
    /// Remove a secret.
    RemoveSecret {
        /// The secret.
        name: String,
        /// Even while granted.
        force: bool,
    },
    /// Decrypt every version and report failures.
    Check,
    /// Deploy a function.
    Deploy(Deploy),
    /// Remove a function and its grants.
    Undeploy {
        /// The function.
        function: String,
    },
    /// List functions and their bindings' states.
    Functions,
    /// Grant a binding.
    Grant {
        /// The function.
        function: String,
        /// The binding.
        binding: String,
        /// Secret, operations, egress.
        body: GrantBody,
    },
    /// Remove a grant.
    Revoke {
        /// The function.
        function: String,
        /// The binding.
        binding: String,
    },
    /// List grants.
    Grants {
        /// Only this function's.
        function: Option<String>,
    },
    /// Approve what a function asks for now (its outbound hosts).
    Approve {
        /// The function.
        function: String,
        /// Optionally, the component digest the operator reviewed.
        body: ApproveBody,
    },
    /// Create a token.
    CreateToken(CreateToken),
    /// List tokens.
    Tokens,
    /// Revoke a token.
    RevokeToken {
        /// The token's name.
        name: String,
    },
    /// Read the audit trail.
    Audit(Query),
    /// Verify the audit trail's chain.
    AuditVerify,
    /// Remove the audit trail's records older than this many seconds,
    /// leaving a signed checkpoint.
    AuditPrune {
        /// The age past which records go.
        older_than_secs: u64,
    },
}

/// What a request is, for permission checks and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// The permission it needs.
    pub permission: Permission,
    /// Its name in audit records, e.g. `secret.put`.
    pub action: &'static str,
    /// What it acts on, e.g. `secret/gh-webhook`.
    pub target: String,
    /// The function it concerns.
    pub function: Option<String>,
    /// The secret it concerns.
    pub secret: Option<String>,
}

impl Request {
    /// Its permission, audit name and target.
    pub fn describe(&self) -> Described {
        use Permission::*;
        let d =
            |permission, action, target: String, function: Option<&str>, secret: Option<&str>| {
                Described {
                    permission,
                    action,
                    target,
                    function: function.map(str::to_owned),
                    secret: secret.map(str::to_owned),
                }
            };
        let secret = |n: &str| format!("secret/{n}");
        match self {
            Request::PutSecret { name, .. } => {
                d(SecretsWrite, "secret.put", secret(name), None, Some(name))
            }
            Request::RotateSecret { name, .. } => d(
                SecretsWrite,
                "secret.rotate",
                secret(name),
                None,
                Some(name),
            ),
            Request::ListSecrets => d(SecretsRead, "secret.list", "secrets".into(), None, None),
            Request::Versions { name } => d(
                SecretsRead,
                "secret.versions",
                secret(name),
                None,
                Some(name),
            ),
            Request::Rollback { name, .. } => d(
                SecretsWrite,
                "secret.rollback",
                secret(name),
                None,
                Some(name),
            ),
            Request::Dependents { name } => d(
                SecretsRead,
                "secret.dependents",
                secret(name),
                None,
                Some(name),
            ),
            Request::RemoveSecret { name, .. } => d(
                SecretsWrite,
                "secret.remove",
                secret(name),
                None,
                Some(name),
            ),
            Request::Check => d(SecretsRead, "secret.check", "secrets".into(), None, None),
            Request::Deploy(body) => {
                let name = wire::manifest_function_name(&body.manifest);
                d(
                    FunctionsDeploy,
                    "function.deploy",
                    format!("function/{}", name.as_deref().unwrap_or("?")),
                    name.as_deref(),
                    None,
                )
            }
            Request::Undeploy { function } => d(
                FunctionsDeploy,
                "function.undeploy",
                format!("function/{function}"),
                Some(function),
                None,
            ),
            Request::Functions => d(
                FunctionsRead,
                "function.list",
                "functions".into(),
                None,
                None,
            ),
            Request::Grant {
                function,
                binding,
                body,
            } => d(
                GrantsWrite,
                "grant.create",
                format!("grant/{function}/{binding}"),
                Some(function),
                Some(&body.secret),
            ),
            Request::Approve { function, .. } => d(
                GrantsWrite,
                "function.approve",
                format!("function/{function}"),
                Some(function),
                None,
            ),
            Request::Revoke { function, binding } => d(
                GrantsWrite,
                "grant.revoke",
                format!("grant/{function}/{binding}"),
                Some(function),
                None,
            ),
            Request::Grants { function } => d(
                GrantsRead,
                "grant.list",
                function
                    .as_ref()
                    .map_or("grants".into(), |f| format!("grants/{f}")),
                function.as_deref(),
                None,
            ),
            Request::CreateToken(body) => d(
                TokensWrite,
                "token.create",
                format!("token/{}", body.name.as_deref().unwrap_or("(generated)")),
                None,
                None,
            ),
            Request::Tokens => d(TokensRead, "token.list", "tokens".into(), None, None),
            Request::RevokeToken { name } => d(
                TokensWrite,
                "token.revoke",
                format!("token/{name}"),
                None,
                None,
            ),
            Request::Audit(_) => d(AuditRead, "audit.read", "audit".into(), None, None),
            Request::AuditVerify => d(AuditRead, "audit.verify", "audit".into(), None, None),
            Request::AuditPrune { .. } => d(AuditPrune, "audit.prune", "audit".into(), None, None),
        }
    }
}

/// Why an admin request failed, with the HTTP status it answers with.
/// Messages name what is wrong and never carry a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{message}")]
pub struct AdminError {
    /// The HTTP status.
    pub status: u16,
    /// What went wrong and what to do.
    pub message: String,
}

impl AdminError {
    /// An error with `status`.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 403: the caller lacks `permission`.
    pub fn forbidden(caller: &Caller, permission: Permission) -> Self {
        Self::new(
            403,
            format!(
                "token `{}` (role {}) lacks the permission `{permission}`",
                caller.name(),
                caller.role()
            ),
        )
    }

    /// Whether the caller was refused (as opposed to the action failing).
    pub fn is_denial(&self) -> bool {
        matches!(self.status, 401 | 403)
    }
}

/// An error's message followed by its causes, as `anyhow` prints `{:#}`.
pub(crate) fn chain_message(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
