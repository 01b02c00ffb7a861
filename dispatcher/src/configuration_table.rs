//! Keeps `docs/configuration.md` honest: its tables of variables and the
//! flags `dispatcher serve` really has must agree both ways, names and
//! defaults. The flags are read through clap's own description of the
//! command (`CommandFactory`), never by scanning source text, so a renamed
//! or new flag fails here until the page says so.

use std::collections::BTreeMap;

use clap::CommandFactory;

use crate::cli::Cli;

const PAGE: &str = include_str!("../../docs/configuration.md");

/// The environment variable of every `serve` flag, with its default as
/// `--help` shows it (`None` when it has none).
fn flags() -> BTreeMap<String, Option<String>> {
    let cli = Cli::command();
    let serve = cli
        .find_subcommand("serve")
        .expect("dispatcher has a serve subcommand");
    serve
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_owned();
            let defaults: Vec<_> = arg
                .get_default_values()
                .iter()
                .map(|value| value.to_string_lossy().into_owned())
                .collect();
            Some((env, (!defaults.is_empty()).then(|| defaults.join(","))))
        })
        .collect()
}

/// Names written as `` `UPPER_CASE` `` in a cell.
fn variables(cell: &str) -> Vec<&str> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}

/// Every variable the page's tables document, with the default cell's
/// entry for it: `` `x` `` is a literal default; anything else (`–`, prose,
/// or another variable it falls back to) is not a literal to compare.
fn documented() -> BTreeMap<String, Option<String>> {
    let mut rows = BTreeMap::new();
    for line in PAGE.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let names = variables(cells[0].trim_start_matches("| "));
        let defaults: Vec<&str> = cells[1].split(", ").collect();
        for (i, name) in names.iter().enumerate() {
            let default = match defaults.get(i).or(defaults.last()) {
                Some(d) if d.starts_with('`') && d.ends_with('`') && variables(d).is_empty() => {
                    Some(d.trim_matches('`').to_owned())
                }
                _ => None,
            };
            rows.insert((*name).to_owned(), default);
        }
    }
    rows
}

#[test]
fn the_configuration_page_lists_exactly_the_serve_flags() {
    let flags = flags();
    let documented = documented();
    let undocumented: Vec<_> = flags
        .keys()
        .filter(|k| !documented.contains_key(*k))
        .collect();
    let unknown: Vec<_> = documented
        .keys()
        .filter(|k| !flags.contains_key(*k))
        .collect();
    assert!(
        undocumented.is_empty(),
        "flags missing from docs/configuration.md: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents variables `dispatcher serve` does not read: {unknown:?}"
    );
}

#[test]
fn the_configuration_page_shows_each_literal_default_the_flag_has() {
    let flags = flags();
    let wrong: Vec<_> = documented()
        .into_iter()
        .filter_map(|(name, written)| {
            let real = flags.get(&name).cloned().flatten();
            (written.is_some() && written != real).then_some((name, written, real))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "docs/configuration.md defaults (variable, page, flag): {wrong:?}"
    );
}
