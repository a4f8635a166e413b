//! Confab server entry: config → store → hub → router → serve.

use clap::Parser;
use confab::server::{
    Server,
    config::{Command, Config},
};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Some(Command::Admin(command)) = &config.command {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let out = runtime.block_on(confab::server::admin::run(&config, command))?;
        println!("{out}");
        return Ok(());
    }
    // Store reads run on blocking threads, one per read connection at a time (plus the
    // checkpointer's), so a few threads suffice; tokio's default (512) only adds stacks
    // and malloc arenas.
    // PostgreSQL's calls wait on the network, not on a disk lock: more of them may wait
    // at once (bounded by its pool).
    let blocking = if config.uses_postgres() {
        confab::server::store::postgres::POOL_SIZE + 4
    } else {
        config.read_connections as usize + 2
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking)
        .build()?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(EnvFilter::new(&config.log)).init();
    let db = config.db_display();
    let server = Server::bind(config).await?;
    tracing::info!(addr = %server.local_addr(), db = %db, "Confab listening on http://{}", server.local_addr());
    server.run(shutdown_signal()).await?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
