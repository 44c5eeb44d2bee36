//! The hidden `lockdown generate`: man pages and shell completions from the clap definitions.

use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result};
use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use super::Cli;

/// Write the man pages and shell completions generated from these very definitions (used to
/// build the package, so they never drift from --help).
///
/// Man pages: lockdown.8 and one per verb (lockdown-up.8, lockdown-allow-add.8, …). Completions:
/// lockdown.bash, _lockdown (zsh) and lockdown.fish.
#[derive(Debug, Args)]
pub(super) struct Generate {
    /// Write the man pages (section 8) into this directory.
    #[arg(long, value_name = "DIR")]
    man: Option<PathBuf>,
    /// Write the bash, zsh and fish completions into this directory.
    #[arg(long, value_name = "DIR")]
    completions: Option<PathBuf>,
}

impl Generate {
    pub(super) fn run(self) -> Result<()> {
        if self.man.is_none() && self.completions.is_none() {
            anyhow::bail!("nothing to generate: give --man DIR, --completions DIR or both");
        }
        let mut cmd = Cli::command();
        cmd.build();
        if let Some(dir) = &self.man {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            man_pages(&cmd, "lockdown", dir)?;
        }
        if let Some(dir) = &self.completions {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                let path = clap_complete::generate_to(shell, &mut cmd.clone(), "lockdown", dir)
                    .with_context(|| format!("writing the {shell} completions"))?;
                println!("{}", path.display());
            }
        }
        Ok(())
    }
}

/// Writes `NAME.8` for `cmd` and, recursively, `NAME-VERB.8` for each visible subcommand.
fn man_pages(cmd: &clap::Command, name: &str, dir: &std::path::Path) -> Result<()> {
    let page = cmd.clone().name(name.to_owned());
    let path = dir.join(format!("{name}.8"));
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .section("8")
        .manual("System Administration")
        .source(format!("lockdown {}", env!("CARGO_PKG_VERSION")))
        .render(&mut out)
        .with_context(|| format!("rendering {name}(8)"))?;
    fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    println!("{}", path.display());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        man_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
