//! How long the sender takes to make one letter (the template filled in, formatted for the
//! wire), single-threaded, with no database or network: `cargo run --release --example
//! letter_making [N]`. The letter is the one `benches/send.sh` sends (~2 KB of text with the
//! recipient's name in its subject and body).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use mailctl::cli::Settings;
use mailctl::config::Config;
use mailctl::mail::compose::{Recipient, Template};
use mailctl::mail::transport::Wire;

fn main() {
    let n: i64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let config = Config::load(&Settings::default()).expect("default settings");
    let line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, {{full_name}}.\n";
    let body: String = line
        .repeat(2048 / line.len() + 1)
        .chars()
        .take(2048 - 700)
        .collect();
    let template = Template::new(
        &config,
        vec![7; 32],
        1,
        "Benchmark for {{full_name}}",
        &body,
        None,
    )
    .expect("template");
    let mut bytes = 0;
    let start = Instant::now();
    for i in 0..n {
        let email = format!("r{i}@example.com");
        let full_name = format!("Person {i}");
        let to = Recipient {
            client_id: i,
            email: &email,
            full_name: &full_name,
            fields: "{}",
        };
        let letter = template.letter(&to).expect("letter");
        bytes += Wire::from(&letter).bytes.len();
    }
    let took = start.elapsed();
    println!(
        "{n} letters of {} bytes: {:.2} µs per letter",
        bytes / n as usize,
        took.as_secs_f64() * 1e6 / n as f64
    );
}
