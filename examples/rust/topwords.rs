//! A WASI job in Rust: read text on stdin, print its ten most frequent words with their counts
//! (ties in alphabetical order). Build with ./build.sh (Debian's rustc and its wasm32 std).
use std::collections::BTreeMap;
use std::io::{self, Read, Write};

fn main() {
    let mut text = String::new();
    if let Err(error) = io::stdin().read_to_string(&mut text) {
        eprintln!("stdin is not UTF-8 text: {error}");
        std::process::exit(2);
    }
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        *counts.entry(word.to_lowercase()).or_insert(0) += 1;
    }
    let mut ranked: Vec<(&String, &u64)> = counts.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut out = io::stdout().lock();
    for (word, count) in ranked.into_iter().take(10) {
        writeln!(out, "{count} {word}").expect("stdout");
    }
}
