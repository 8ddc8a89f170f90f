use std::path::PathBuf;

use clap::{Parser, Subcommand};
use roomd::{app::Application, cli, config::Settings, store, telemetry};

/// roomd: a stateful room supervisor for LiveKit.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Settings file; a missing file means built-in defaults.
    #[arg(long, global = true, default_value = "config.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve webhooks and reads (the default).
    Serve,
    /// Bring the database schema up to date and exit.
    Migrate,
    /// Developer helpers for LiveKit webhooks.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Print a LiveKit token for roomd's read API, signed with the configured key.
    Token(cli::MintToken),
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Build a LiveKit-format webhook, sign it with the configured key and
    /// secret, and POST it to roomd.
    Send(cli::SendWebhook),
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(&cli.config)?;
    telemetry::init(&settings.log);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.recover().await?;
            app.run().await?;
        }
        Command::Migrate => {
            store::migrate_without_deadline(&settings.database).await?;
            tracing::info!("migrations applied");
        }
        Command::Webhook(WebhookCommand::Send(cmd)) => cli::send_webhook(&settings, cmd).await?,
        Command::Token(cmd) => cli::mint_token(&settings, cmd)?,
    }
    Ok(())
}
