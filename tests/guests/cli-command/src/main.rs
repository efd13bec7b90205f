//! A plain command-line program: a valid component, but not a wasi:http one.
fn main() {
    println!("I am a command, not an HTTP handler");
}
