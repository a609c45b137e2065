//! `vcell info`: what is in an .h5ad, without reading X's data.
use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    pub file: PathBuf,
    /// Categories shown per obs column.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let summary = crate::data::info::summarize(&args.file, args.top)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{summary}");
    }
    Ok(())
}
