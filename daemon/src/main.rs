//! `legalchatd`: see `legalchat_daemon::cli`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    legalchat_daemon::cli::main();
}
