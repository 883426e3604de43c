//! The `herald` command line: the server (no subcommand) and the tools
//! beside it. `token` mints an HS256 JWT, `check-token` says whether this
//! configuration accepts a token and why not, `config` prints the
//! effective configuration with each value's source.
//!
//! Every subcommand takes the server's own options (flags, `HERALD_*` env,
//! the `--config` file, merged as the server merges them), so a tool sees
//! exactly what the server started with the same environment would.

mod effective;
mod token;

use std::io::{Read, Write};

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::auth::KeyError;
use crate::config::{Config, ConfigError, Dur, Options};

pub use effective::{render_config, Source};
pub use token::{check_token, mint_token, TokenRequest};

/// `herald [OPTIONS] [COMMAND]`: with no command, runs the server.
#[derive(Debug, Parser)]
#[command(
    name = "herald",
    args_override_self = true,
    version,
    about = "Herald: a pub/sub real-time notification hub (RESP, WebSocket, HTTP)",
    long_about = "Herald: a pub/sub real-time notification hub.\n\n\
        Redis clients publish and subscribe over RESP, browsers over WebSocket, \
        backends over HTTP, all on one channel registry. With no command, \
        herald runs the server.\n\n\
        Each option is a flag, an environment variable HERALD_<NAME> and a key \
        of the TOML file given with --config (snake_case); precedence is \
        flag > env > file > default. Sizes accept b/kb/mb/gb suffixes, durations \
        ms/s/m/h."
)]
pub struct Cli {
    #[command(flatten)]
    pub options: Options,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The tools beside the server. Each also takes every server option (after
/// the command name too), read as the server reads them.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a JWT for a user, signed with the configured HS256 secret
    /// (--jwt-hmac-secret, HERALD_JWT_HMAC_SECRET or jwt_hmac_secret in the
    /// --config file).
    Token(TokenArgs),
    /// Print a token's header and claims, and whether this configuration
    /// accepts it (and why not). Exit status 0 when accepted, 1 when
    /// refused, 2 when it cannot be checked.
    CheckToken(CheckTokenArgs),
    /// Print the effective configuration as TOML, defaults included, with
    /// each value's source (default, file, env, flag) as a comment.
    /// Secrets are masked.
    Config(ConfigArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (claim `sub`).
    #[arg(long, value_name = "USER")]
    pub sub: String,
    /// A JSON object shown in presence (claim `info`).
    #[arg(long, value_name = "JSON")]
    pub info: Option<String>,
    /// Globs the holder may subscribe to (claim `subscribe`; repeat or list
    /// several; given with none, it may subscribe nowhere). Absent: the
    /// namespaces decide.
    #[arg(long, value_name = "GLOB", num_args = 0.., action = clap::ArgAction::Append)]
    pub subscribe: Option<Vec<String>>,
    /// Globs the holder may publish to (claim `publish`), as --subscribe.
    #[arg(long, value_name = "GLOB", num_args = 0.., action = clap::ArgAction::Append)]
    pub publish: Option<Vec<String>>,
    /// Mint a subscription token instead: it grants this one channel to
    /// the WebSocket connection of --sub (claim `channel`), and cannot
    /// open a connection.
    #[arg(long, value_name = "CHANNEL")]
    pub channel: Option<String>,
    /// Lifetime of the token (claim `exp` = now + ttl).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub ttl: Dur,
    #[command(flatten, next_help_heading = "Server options")]
    pub options: Options,
}

#[derive(Debug, Args)]
pub struct CheckTokenArgs {
    /// The JWT; `-` reads it from standard input (keeps it out of `ps`).
    #[arg(value_name = "TOKEN")]
    pub token: String,
    #[command(flatten, next_help_heading = "Server options")]
    pub options: Options,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(flatten, next_help_heading = "Server options")]
    pub options: Options,
}

/// Why a tool could not do its job (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(
        "no HMAC secret configured: herald token signs HS256 tokens with --jwt-hmac-secret \
         (or HERALD_JWT_HMAC_SECRET, or jwt_hmac_secret in the --config file)"
    )]
    NoHmacSecret,
    #[error(
        "this configuration verifies tokens with a public key (--jwt-public-key-file): \
         herald holds no private key to sign with; sign with your own issuer, or configure \
         --jwt-hmac-secret instead"
    )]
    PublicKeyOnly,
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read the token from standard input: {0}")]
    Stdin(std::io::Error),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// The command line, parsed. The matches are kept: `herald config` asks
/// them where each value came from.
pub struct Invocation {
    pub cli: Cli,
    matches: ArgMatches,
}

impl Invocation {
    /// Parses the process's arguments (exits with clap's message on a
    /// usage error, as `Options::parse` did).
    pub fn from_env() -> Invocation {
        Self::from_matches(Cli::command().get_matches())
    }

    /// Parses `args` (the first is the program name).
    pub fn try_from_args<I, T>(args: I) -> Result<Invocation, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        Ok(Self::from_matches(matches))
    }

    fn from_matches(matches: ArgMatches) -> Invocation {
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        Invocation { cli, matches }
    }

    /// Runs the tool named on the command line (none: `Ok(None)`, the
    /// caller runs the server with [`Invocation::server_config`]).
    /// `Ok(Some(true))`: done; `Ok(Some(false))`: the answer is "no"
    /// (`check-token` refused the token).
    pub fn run_tool(self, out: &mut dyn Write) -> Result<Option<bool>, ToolError> {
        let Invocation { cli, matches } = self;
        let Some(command) = cli.command else {
            return Ok(None);
        };
        let sub = matches.subcommand().map(|(_, m)| m);
        let layers: Vec<&ArgMatches> = sub.into_iter().chain([&matches]).collect();
        match command {
            Command::Token(a) => {
                let cfg = Config::from_options(a.options.merge_over(cli.options))?;
                let info = match a.info {
                    Some(text) => Some(
                        serde_json::from_str(&text)
                            .map_err(|e| ToolError::Invalid(format!("--info is not JSON: {e}")))?,
                    ),
                    None => None,
                };
                let req = TokenRequest {
                    sub: a.sub,
                    info,
                    subscribe: a.subscribe,
                    publish: a.publish,
                    channel: a.channel,
                    ttl: a.ttl.0,
                };
                writeln!(out, "{}", mint_token(&cfg, &req)?)?;
                Ok(Some(true))
            }
            Command::CheckToken(a) => {
                let cfg = Config::from_options(a.options.merge_over(cli.options))?;
                let token = if a.token == "-" {
                    let mut s = String::new();
                    std::io::stdin()
                        .take(1 << 20)
                        .read_to_string(&mut s)
                        .map_err(ToolError::Stdin)?;
                    s
                } else {
                    a.token
                };
                check_token(&cfg, &token, out).map(Some)
            }
            Command::Config(a) => {
                let opts = a.options.merge_over(cli.options);
                let file = opts.config.clone();
                let cfg = Config::from_options(opts)?;
                let source = |id: &str| effective::source_of(id, &layers, file.as_deref());
                render_config(&cfg, file.as_deref(), &source, out)?;
                Ok(Some(true))
            }
        }
    }

    /// The server's configuration (no subcommand).
    pub fn server_config(self) -> Result<Config, ConfigError> {
        Config::from_options(self.cli.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_keeps_every_flag() {
        let inv = Invocation::try_from_args([
            "herald",
            "--resp-addr",
            "127.0.0.1:0",
            "--resp-addr",
            "127.0.0.1:7000",
            "--allow-anonymous",
            "--allowed-origins",
            "a,b",
        ])
        .unwrap();
        assert!(inv.cli.command.is_none());
        let cfg = inv.server_config().unwrap();
        assert_eq!(cfg.resp_addr.port(), 7000, "a repeated flag: the last wins");
        assert!(cfg.allow_anonymous);
        assert_eq!(cfg.allowed_origins, ["a", "b"]);
    }

    #[test]
    fn tools_take_server_options_before_and_after_their_name() {
        let inv = Invocation::try_from_args([
            "herald",
            "--jwt-hmac-secret",
            "top",
            "token",
            "--sub",
            "alice",
            "--subscribe",
            "chat:*",
            "news",
            "--subscribe",
            "x",
            "--publish",
            "--ttl",
            "10m",
        ])
        .unwrap();
        let Some(Command::Token(a)) = &inv.cli.command else {
            panic!("not token");
        };
        assert_eq!(
            a.subscribe.as_deref(),
            Some(&["chat:*".into(), "news".into(), "x".into()][..])
        );
        assert_eq!(a.publish.as_deref(), Some(&[][..]));
        assert_eq!(a.ttl.0.as_secs(), 600);
        assert_eq!(inv.cli.options.jwt_hmac_secret.as_deref(), Some("top"));
        let inv = Invocation::try_from_args([
            "herald",
            "check-token",
            "abc",
            "--jwt-hmac-secret",
            "after",
        ])
        .unwrap();
        let Some(Command::CheckToken(a)) = &inv.cli.command else {
            panic!("not check-token");
        };
        assert_eq!(a.options.jwt_hmac_secret.as_deref(), Some("after"));
        assert!(
            Invocation::try_from_args(["herald", "token"]).is_err(),
            "--sub is required"
        );
    }
}
