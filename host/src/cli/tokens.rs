//! `keyhole token create|list|revoke`: admin API tokens.

use super::{Access, Target, output};
use clap::Subcommand;
use keyhole_host::admin::Request;
use keyhole_host::admin::access::{FunctionScope, Role, RouteScope};
use keyhole_host::admin::types::{CreateToken, CreatedToken};
use keyhole_host::store::TokenInfo;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once (only its hash is kept). Run
    /// against the data directory to make the first admin token.
    Create {
        /// admin (everything), deployer (deploy and list functions) or
        /// auditor (read the audit trail, metrics and metadata).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Deployers only: the function names it may deploy, as
        /// comma-separated patterns where `*` matches anything, e.g.
        /// 'checkout-*' [default: all].
        #[arg(long, value_name = "PATTERNS", value_parser = parse_scope)]
        functions: Option<FunctionScope>,
        /// Deployers only: the routes it may claim, as comma-separated
        /// prefixes such as '/checkout/*' (the prefix and everything below
        /// it) [default: all].
        #[arg(long, value_name = "PATTERNS", value_parser = parse_routes)]
        routes: Option<RouteScope>,
        /// How long it works, e.g. 7d [default: until revoked].
        #[arg(long, value_name = "DURATION", value_parser = super::secrets::parse_duration)]
        expires: Option<i64>,
        /// A name to recognise it by in listings and the audit trail
        /// [default: role and id].
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens: names, roles, scopes, expiry; never the tokens.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token at once.
    Revoke {
        /// The token's name.
        name: String,
    },
}

fn parse_routes(text: &str) -> Result<RouteScope, String> {
    let scope = RouteScope::parse_list(text)?;
    if scope.is_unlimited() {
        return Err("name at least one route pattern, e.g. '/checkout/*'".into());
    }
    Ok(scope)
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
}

fn parse_scope(text: &str) -> Result<FunctionScope, String> {
    let scope = FunctionScope::parse_list(text)?;
    if scope.is_unlimited() {
        return Err("name at least one function pattern, e.g. 'checkout-*'".into());
    }
    Ok(scope)
}

/// Runs one `keyhole token …` command.
pub fn run(target: &Target, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            role,
            functions,
            routes,
            expires,
            name,
        } => {
            let created: CreatedToken =
                target
                    .backend(Access::CreateIfMissing)?
                    .call(Request::CreateToken(CreateToken {
                        role,
                        name,
                        functions: functions.unwrap_or_default(),
                        routes: routes.unwrap_or_default(),
                        expires_secs: expires,
                    }))?;
            let info = &created.info;
            eprintln!(
                "created {} token `{}`{}{}{}; it is shown only now: store it in a secret manager",
                info.role,
                info.name,
                if info.functions.is_unlimited() {
                    String::new()
                } else {
                    format!(" for functions {}", info.functions)
                },
                if info.routes.is_unlimited() {
                    String::new()
                } else {
                    format!(" at routes {}", info.routes)
                },
                info.expires_at
                    .map_or_else(String::new, |at| format!(", expiring {}", output::time(at)))
            );
            println!("{}", created.token);
            Ok(())
        }
        TokenCommand::List { json } => {
            let tokens: Vec<TokenInfo> = target.backend(Access::Existing)?.call(Request::Tokens)?;
            if json {
                return output::json(&tokens);
            }
            let now = keyhole_host::store::now();
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    let state = match (t.revoked_at, t.expires_at) {
                        (Some(at), _) => format!("revoked {}", output::time(at)),
                        (None, Some(at)) if at <= now => format!("expired {}", output::time(at)),
                        (None, Some(at)) => format!("active until {}", output::time(at)),
                        (None, None) => "active".to_owned(),
                    };
                    vec![
                        t.name.clone(),
                        t.role.to_string(),
                        t.functions.to_string(),
                        t.routes.to_string(),
                        output::time(t.created_at),
                        t.created_by.clone(),
                        state,
                    ]
                })
                .collect();
            output::table(
                &[
                    "NAME",
                    "ROLE",
                    "FUNCTIONS",
                    "ROUTES",
                    "CREATED",
                    "CREATED-BY",
                    "STATE",
                ],
                &rows,
            );
            Ok(())
        }
        TokenCommand::Revoke { name } => {
            let info: TokenInfo = target
                .backend(Access::Existing)?
                .call(Request::RevokeToken { name })?;
            println!(
                "revoked {} token `{}`: it is refused from now on",
                info.role, info.name
            );
            Ok(())
        }
    }
}
