// `sqlx::migrate!` embeds migrations/ at compile time, but cargo only rebuilds a crate
// when a file it knows about changes: without this, a new migration file is silently
// left out of a cached build.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
