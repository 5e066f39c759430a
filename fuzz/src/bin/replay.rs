//! Replays inputs through a target's body without libFuzzer (an ordinary optimised build, no
//! sanitizer), timing each: `cargo run --release --bin replay -- <idx|cifar|folder|sheet> FILE...`.

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_default();
    let body: fn(&[u8]) = match target.as_str() {
        "idx" => kiln_data_fuzz::idx,
        "cifar" => kiln_data_fuzz::cifar,
        "folder" => kiln_data_fuzz::folder,
        "sheet" => kiln_data_fuzz::sheet,
        _ => {
            eprintln!("usage: replay <idx|cifar|folder|sheet> FILE...");
            std::process::exit(2);
        }
    };
    let mut failed = false;
    for file in args {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let start = Instant::now();
        let outcome = std::panic::catch_unwind(|| body(&data));
        failed |= outcome.is_err();
        let verdict = if outcome.is_ok() { "ok" } else { "PANIC" };
        println!("{file}: {verdict} in {:.3} s", start.elapsed().as_secs_f64());
    }
    std::process::exit(i32::from(failed));
}
