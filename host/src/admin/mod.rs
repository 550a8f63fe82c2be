//! Administering a node: every change and every read an operator,
//! deployer or auditor can make, checked against the caller's role and
//! recorded in the audit trail.
//!
//! [`Admin::handle`] is the one entry point. The HTTP admin listener
//! ([`http`]) calls it for token bearers; the CLI calls it directly with
//! [`Caller::Local`] when it works on the data directory. Both get the same
//! JSON reply ([`types`]), so the CLI prints the same thing either way.

pub mod access;
pub mod console;
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
    /// The node's own state: what it serves, and its link to its fleet.
    Status,
    /// The caller's own token: name, role, permissions and scope.
    WhoAmI,
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
            Request::Status => d(MetricsRead, "node.status", "node".into(), None, None),
            Request::AuditPrune { .. } => d(AuditPrune, "audit.prune", "audit".into(), None, None),
            Request::WhoAmI => d(SelfRead, "token.whoami", "token/self".into(), None, None),
        }
    }
}

/// What kind of failure an admin request met. Each kind answers with one
/// HTTP status, chosen here and nowhere else ([`ErrorKind::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed (400).
    BadRequest,
    /// No valid token came with it (401).
    Unauthenticated,
    /// The caller may not do this (403).
    Forbidden,
    /// What it names does not exist (404).
    NotFound,
    /// The path exists, not with this method (405).
    MethodNotAllowed,
    /// The request body arrived too slowly (408).
    Timeout,
    /// It conflicts with what is stored (409).
    Conflict,
    /// The request body is too large (413).
    TooLarge,
    /// Well formed, but its content cannot be accepted (422).
    Unprocessable,
    /// Too many requests of this kind for now (429).
    TooManyRequests,
    /// The node failed to carry it out (500).
    Internal,
    /// The node cannot serve admin requests now (503).
    Unavailable,
}

impl ErrorKind {
    /// The HTTP status it answers with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Timeout => 408,
            ErrorKind::Conflict => 409,
            ErrorKind::TooLarge => 413,
            ErrorKind::Unprocessable => 422,
            ErrorKind::TooManyRequests => 429,
            ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
        }
    }

    /// The kind a node's answer with `status` means (the CLI reading a
    /// remote node's reply); a status Keyhole does not answer with counts
    /// as a bad request (4xx) or an internal failure.
    pub fn from_status(status: u16) -> Self {
        const KINDS: [ErrorKind; 12] = [
            ErrorKind::BadRequest,
            ErrorKind::Unauthenticated,
            ErrorKind::Forbidden,
            ErrorKind::NotFound,
            ErrorKind::MethodNotAllowed,
            ErrorKind::Timeout,
            ErrorKind::Conflict,
            ErrorKind::TooLarge,
            ErrorKind::Unprocessable,
            ErrorKind::TooManyRequests,
            ErrorKind::Internal,
            ErrorKind::Unavailable,
        ];
        KINDS
            .into_iter()
            .find(|kind| kind.status() == status)
            .unwrap_or(if (400..500).contains(&status) {
                ErrorKind::BadRequest
            } else {
                ErrorKind::Internal
            })
    }
}

/// Why an admin request failed: its kind (which decides the HTTP status)
/// and a message naming what is wrong, which never carries a secret value.
/// On the wire it is `{"status": N, "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(into = "WireError", from = "WireError")]
#[error("{message}")]
pub struct AdminError {
    /// What kind of failure it is.
    pub kind: ErrorKind,
    /// What went wrong and what to do.
    pub message: String,
}

/// [`AdminError`] as the API sends it.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireError {
    status: u16,
    message: String,
}

impl From<AdminError> for WireError {
    fn from(e: AdminError) -> Self {
        WireError {
            status: e.kind.status(),
            message: e.message,
        }
    }
}

impl From<WireError> for AdminError {
    fn from(e: WireError) -> Self {
        AdminError::new(ErrorKind::from_status(e.status), e.message)
    }
}

impl AdminError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// The node failed to carry the request out.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The caller lacks `permission`.
    pub fn forbidden(caller: &Caller, permission: Permission) -> Self {
        Self::new(
            ErrorKind::Forbidden,
            format!(
                "token `{}` (role {}) lacks the permission `{permission}`",
                caller.name(),
                caller.role()
            ),
        )
    }

    /// Whether the caller was refused (as opposed to the action failing).
    pub fn is_denial(&self) -> bool {
        matches!(self.kind, ErrorKind::Unauthenticated | ErrorKind::Forbidden)
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
