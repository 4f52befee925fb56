//! The daemon's whole command line, built as part of this crate so that the end-to-end
//! tests can find it with `env!("CARGO_BIN_EXE_legalchatd-test")`.

fn main() {
    legalchat_daemon::cli::main()
}
