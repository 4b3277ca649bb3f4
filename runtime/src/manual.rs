//! The daemons' manual pages, made from their command-line definitions
//! (clap_mangen), so that they say what the commands take: one page for
//! the program and one per verb (`sixgate-broker-client-add.8`), in
//! section 8.

use std::path::Path;

/// Writes the pages of `command` and its (visible) subcommands to `dir`.
pub fn write_pages(command: clap::Command, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut command = command.disable_help_subcommand(true);
    // Building names each subcommand for its page (program-verb-verb).
    command.build();
    write_tree(command, dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn write_tree(command: clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
    {
        write_tree(sub, dir)?;
    }
    clap_mangen::Man::new(command)
        .section("8")
        .generate_to(dir)
        .map(|_| ())
}
