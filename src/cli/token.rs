//! `usan token --name N --role R`: a new API token, printed once with the
//! line that grants it (only the token's SHA-256 goes into the configuration).

use crate::api::auth::{Role, new_token};

/// `usan token` as typed on the command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Who acts with it (recorded in alarm histories).
    #[arg(long)]
    name: String,
    /// What it may do.
    #[arg(long, value_enum)]
    role: Role,
}

/// Print a new token and the line for `[auth] tokens`.
///
/// # Errors
/// When the system's random source fails.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (token, sha) = new_token()?;
    println!("token (give it to {}; it is not stored anywhere): {token}", args.name);
    println!("add to [auth] tokens:");
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    println!("  {{ name = {}, role = \"{}\", sha256 = \"{sha}\" }},", quote(&args.name), args.role.as_str());
    Ok(())
}
