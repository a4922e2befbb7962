//! `strongbox key …`: encrypt, decrypt and re-encrypt with a CMK, and make data keys,
//! from the command line (KMS's `Encrypt`, `Decrypt`, `ReEncrypt`, `GenerateDataKey`). Data comes in on
//! standard input and goes out on standard output, never through arguments; the
//! encryption context, which is not secret, is given with `--context NAME=VALUE`.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Read as _, Write as _};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use strongbox_schemas::{self as api, DataKeySpec};
use zeroize::Zeroizing;

use crate::admin::client;
use crate::secret_cli::fit_for_a_terminal;

#[derive(Subcommand)]
pub(crate) enum KeyCommand {
    /// Encrypt standard input, byte for byte (at most 6144 bytes), under a CMK; prints
    /// the ciphertext blob (base64) and a newline.
    Encrypt {
        /// Key id or alias/NAME.
        key: String,
        /// A pair of the encryption context (repeat for more); decrypting needs the same.
        #[arg(long = "context", value_name = "NAME=VALUE")]
        context: Vec<String>,
    },
    /// Decrypt a ciphertext blob (base64, on standard input); writes the data to
    /// standard output byte for byte (at a terminal only text without control
    /// characters).
    Decrypt {
        /// The key that must have made the blob (id or alias/NAME); refused if the blob
        /// names another. Without it, the key the blob names: give it when someone else
        /// could have swapped the blob for one made under another key you may use.
        #[arg(long)]
        key: Option<String>,
        /// A pair of the encryption context it was made with (repeat for more).
        #[arg(long = "context", value_name = "NAME=VALUE")]
        context: Vec<String>,
    },
    /// Re-encrypt a ciphertext blob (base64, on standard input) under a CMK, the data
    /// never leaving the server; prints the new blob. After a key rotation, re-encrypt
    /// under the same key to move a blob to the new version.
    ReEncrypt {
        /// Key id or alias/NAME of the new blob.
        key: String,
        /// The key that made the blob (default: the one the blob names).
        #[arg(long)]
        source_key: Option<String>,
        /// A pair of the context the blob was made with (repeat for more).
        #[arg(long = "source-context", value_name = "NAME=VALUE")]
        source_context: Vec<String>,
        /// A pair of the new blob's context (repeat for more); without any, the new blob
        /// keeps the source context.
        #[arg(long = "context", value_name = "NAME=VALUE")]
        context: Vec<String>,
        /// The new blob has no context at all.
        #[arg(long, conflicts_with = "context")]
        no_context: bool,
    },
    /// Make a random data key, encrypted under a CMK: prints JSON with `ciphertext_blob`
    /// (keep it) and `plaintext` (base64; use it, then forget it).
    GenerateDataKey {
        /// Key id or alias/NAME.
        key: String,
        /// AES_256 (32 bytes, the default) or AES_128 (16 bytes).
        #[arg(long, value_parser = ["AES_256", "AES_128"], conflicts_with = "bytes")]
        spec: Option<String>,
        /// Length of the data key, 1–1024 bytes.
        #[arg(long)]
        bytes: Option<u32>,
        /// Print only the encrypted copy (`kms:GenerateDataKeyWithoutPlaintext`).
        #[arg(long)]
        without_plaintext: bool,
        /// A pair of the encryption context (repeat for more).
        #[arg(long = "context", value_name = "NAME=VALUE")]
        context: Vec<String>,
    },
}

/// `NAME=VALUE` pairs into a context; a name given twice is refused.
fn parse_context(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut ctx = BTreeMap::new();
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else {
            bail!("--context takes NAME=VALUE, not {pair:?}");
        };
        if ctx.insert(name.to_string(), value.to_string()).is_some() {
            bail!("--context names {name:?} twice");
        }
    }
    Ok(ctx)
}

/// Standard input, refused past `most` bytes (read no further than one more).
pub(crate) fn read_stdin(what: &str, most: usize) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut raw = Zeroizing::new(Vec::with_capacity(most + 1));
    std::io::stdin()
        .take(most as u64 + 1)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the {what} from standard input"))?;
    if raw.len() > most {
        bail!("the {what} on standard input is longer than {most} bytes");
    }
    Ok(raw)
}

/// A ciphertext blob on standard input: base64 text, surrounding whitespace dropped.
fn read_blob() -> anyhow::Result<String> {
    // Base64 of the largest blob, with room for a newline.
    let blob = read_stdin("ciphertext blob", 16 << 10)?;
    let blob = std::str::from_utf8(&blob)
        .context("the ciphertext blob on standard input is not base64 text")?;
    Ok(blob.trim().to_string())
}

pub(crate) async fn key(cmd: KeyCommand) -> anyhow::Result<()> {
    let c = client()?;
    match cmd {
        KeyCommand::Encrypt { key, context } => {
            let context = parse_context(&context)?;
            if std::io::stdin().is_terminal() {
                bail!(
                    "encrypt reads the data from a pipe or a file: strongbox key encrypt KEY < FILE"
                );
            }
            let data = read_stdin("data", api::MAX_ENCRYPT_PLAINTEXT_BYTES)?;
            if data.is_empty() {
                bail!("the data on standard input is empty");
            }
            let made = c.encrypt(&key, &data, &context).await?;
            outln!("{}", made.ciphertext_blob);
        }
        KeyCommand::Decrypt { key, context } => {
            let context = parse_context(&context)?;
            let blob = read_blob()?;
            let data = match key {
                None => c.decrypt(&blob, &context).await?,
                Some(key) => c.decrypt_with_key(&key, &blob, &context).await?,
            };
            let mut stdout = std::io::stdout().lock();
            if stdout.is_terminal() && !fit_for_a_terminal(&data) {
                bail!(
                    "the data holds control characters or is not UTF-8 text; send it to a file or a pipe: strongbox key decrypt > FILE"
                );
            }
            stdout.write_all(&data).context("writing the data")?;
            stdout.flush().context("writing the data")?;
        }
        KeyCommand::ReEncrypt {
            key,
            source_key,
            source_context,
            context,
            no_context,
        } => {
            let destination = if no_context {
                Some(BTreeMap::new())
            } else if context.is_empty() {
                None
            } else {
                Some(parse_context(&context)?)
            };
            let req = api::ReEncryptRequest {
                source_key_id: source_key,
                source_encryption_context: parse_context(&source_context)?,
                destination_encryption_context: destination,
                ciphertext_blob: read_blob()?,
            };
            let made = c.re_encrypt(&key, &req).await?;
            outln!("{}", made.ciphertext_blob);
        }
        KeyCommand::GenerateDataKey {
            key,
            spec,
            bytes,
            without_plaintext,
            context,
        } => {
            let req = api::GenerateDataKeyRequest {
                key_spec: spec.map(|s| match s.as_str() {
                    "AES_128" => DataKeySpec::Aes128,
                    _ => DataKeySpec::Aes256,
                }),
                number_of_bytes: bytes,
                encryption_context: parse_context(&context)?,
            };
            let text = if without_plaintext {
                Zeroizing::new(serde_json::to_string_pretty(
                    &c.generate_data_key_without_plaintext(&key, &req).await?,
                )?)
            } else {
                let mut made = c.generate_data_key(&key, &req).await?;
                let text = Zeroizing::new(serde_json::to_string_pretty(&made)?);
                zeroize::Zeroize::zeroize(&mut made.plaintext);
                text
            };
            outln!("{}", &*text);
        }
    }
    Ok(())
}
