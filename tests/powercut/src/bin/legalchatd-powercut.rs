fn main() {
    legalchat_daemon::cli::main()
}
