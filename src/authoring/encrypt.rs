//! `encrypt`: a value (stdin) to a cluster's age recipient, bound to where it is used; with
//! `--in-place FILE --path a.b.c`, written straight into the ApplicationInstance file (like
//! `sops --set`), the binding derived from the file's place in the layout.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;

use super::{CliError, ExitCode};
use vworkspace_core::limits::Limits;
use vworkspace_core::secrets::Binding;

/// `encrypt` arguments.
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// The cluster's age recipient (age1...): `age-keygen -y <identity file>` prints it.
    #[arg(long)]
    pub recipient: String,
    /// Write the value into this ApplicationInstance file, at --path under spec.values (comments
    /// and layout kept); cluster, namespace and instance come from the file's place in the layout.
    #[arg(long, requires = "path", conflicts_with_all = ["cluster", "namespace", "instance"])]
    pub in_place: Option<PathBuf>,
    /// Bind to this cluster id (with --namespace, --instance and --path).
    #[arg(long, requires_all = ["namespace", "instance", "path"])]
    pub cluster: Option<String>,
    /// Bind to this namespace.
    #[arg(long, short = 'n', requires = "cluster")]
    pub namespace: Option<String>,
    /// Bind to this ApplicationInstance.
    #[arg(long, requires = "cluster")]
    pub instance: Option<String>,
    /// The value path inside spec.values (e.g. nextcloud.mail.smtp.password).
    #[arg(long)]
    pub path: Option<String>,
}

fn usage(what: impl std::fmt::Display) -> CliError {
    CliError::Usage(what.to_string())
}

fn io_error(e: std::io::Error) -> CliError {
    CliError::Io(e.to_string())
}

/// `encrypt`.
pub fn encrypt(args: &EncryptArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    // The recipient first: a pasted secret key is refused before anything else, never echoed.
    vworkspace_core::secrets::parse_recipient(&args.recipient).map_err(usage)?;
    if let Some(path) = &args.path
        && (path.starts_with("spec.values.") || path == "spec.values")
    {
        return Err(usage(format!(
            "--path {path:?}: the path is relative to spec.values; give {:?}",
            path.trim_start_matches("spec.values")
                .trim_start_matches('.')
        )));
    }
    if args.path.is_some() && args.cluster.is_none() && args.in_place.is_none() {
        return Err(usage(
            "--path binds a value: give --in-place FILE, or --cluster, --namespace and --instance with it",
        ));
    }
    let plaintext = read_value()?;
    match &args.in_place {
        Some(file) => {
            let path = args.path.as_deref().unwrap_or_default();
            in_place(file, path, &plaintext, &args.recipient, out)
        }
        None => {
            let binding = match (&args.cluster, &args.namespace, &args.instance, &args.path) {
                (Some(cluster), Some(namespace), Some(instance), Some(path)) => Some(Binding {
                    cluster: cluster.clone(),
                    namespace: namespace.clone(),
                    instance: instance.clone(),
                    path: path.clone(),
                }),
                (None, None, None, None) => None,
                _ => {
                    return Err(usage(
                        "--cluster, --namespace, --instance and --path go together",
                    ));
                }
            };
            let armored =
                vworkspace_core::secrets::encrypt(&plaintext, &args.recipient, binding.as_ref())
                    .map_err(usage)?;
            out.write_all(armored.as_bytes()).map_err(io_error)?;
            if !armored.ends_with('\n') {
                out.write_all(b"\n").map_err(io_error)?;
            }
            Ok(0)
        }
    }
}

/// Reads the value from stdin, bounded as the operator bounds it; warns (stderr) on an empty value
/// and on a trailing newline (what `echo` adds), never printing the value.
fn read_value() -> Result<zeroize::Zeroizing<Vec<u8>>, CliError> {
    let limit = Limits::default().max_secret_plaintext_bytes;
    let mut plaintext = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin()
        .take(limit as u64 + 1)
        .read_to_end(&mut plaintext)
        .map_err(io_error)?;
    if plaintext.len() > limit {
        return Err(usage(format!(
            "the value on stdin is larger than {limit} bytes"
        )));
    }
    if plaintext.is_empty() {
        eprintln!("warning: the value on stdin is empty; encrypting an empty value");
    } else if plaintext.ends_with(b"\n") {
        eprintln!(
            "warning: the value on stdin ends with a newline, which is encrypted with it (echo adds one; printf %s does not)"
        );
    }
    Ok(plaintext)
}

/// The binding a file's place in the layout gives: `clusters/<c>/namespaces/<ns>/applicationinstances/<name>.yaml`.
fn binding_from_place(file: &Path, path: &str) -> Result<(Binding, String), CliError> {
    // A link would bind the value to the link's target and replace the link with a file; `release`
    // and the operator refuse links in the cluster directory anyway (symlink_metadata: never followed).
    let meta = std::fs::symlink_metadata(file)
        .map_err(|e| usage(format!("--in-place {}: {e}", file.display())))?;
    if meta.file_type().is_symlink() {
        return Err(usage(format!(
            "--in-place {}: a symbolic link; releases refuse links, so edit the file it points to (or replace the link by a file) and run encrypt on that",
            file.display()
        )));
    }
    let absolute = std::fs::canonicalize(file)
        .map_err(|e| usage(format!("--in-place {}: {e}", file.display())))?;
    let root = super::inputs::discover(absolute.parent().unwrap_or(Path::new("/")));
    let relative = absolute
        .strip_prefix(&root)
        .map_err(|_| {
            usage(format!(
                "--in-place {}: not inside a git work tree",
                file.display()
            ))
        })?
        .to_string_lossy()
        .into_owned();
    let parts: Vec<&str> = relative.split('/').collect();
    match parts.as_slice() {
        [
            "clusters",
            cluster,
            "namespaces",
            namespace,
            "applicationinstances",
            name,
        ] if name.ends_with(".yaml") => Ok((
            Binding {
                cluster: (*cluster).to_owned(),
                namespace: (*namespace).to_owned(),
                instance: name.trim_end_matches(".yaml").to_owned(),
                path: path.to_owned(),
            },
            relative,
        )),
        _ => Err(usage(format!(
            "--in-place {relative}: not an ApplicationInstance file of the layout (clusters/<cluster>/namespaces/<namespace>/applicationinstances/<name>.yaml); without it, bind with --cluster --namespace --instance"
        ))),
    }
}

fn in_place(
    file: &Path,
    path: &str,
    plaintext: &[u8],
    recipient: &str,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let (binding, relative) = binding_from_place(file, path)?;
    let text =
        std::fs::read_to_string(file).map_err(|e| usage(format!("--in-place {relative}: {e}")))?;
    let armored =
        vworkspace_core::secrets::encrypt(plaintext, recipient, Some(&binding)).map_err(usage)?;
    let mut segments = vec!["spec", "values"];
    segments.extend(path.split('.'));
    let edited = set_block_scalar(&text, &segments, &armored)
        .map_err(|why| usage(format!("--in-place {relative}: spec.values.{path}: {why}")))?;
    // The edit must read back as exactly this value at exactly this path, or nothing is written.
    let limits = Limits::default();
    let object = vworkspace_core::yaml::parse_document(edited.as_bytes(), &relative, &limits)
        .map_err(|e| {
            usage(format!(
                "--in-place {relative}: the edited file does not parse ({e}); nothing written"
            ))
        })?;
    let mut found = None;
    if let Some(values) = object.pointer("/spec/values") {
        vworkspace_core::secrets::for_each_armored(values, &mut |p, a| {
            if p == path {
                found = Some(a.trim_end() == armored.trim_end());
            }
        });
    }
    if found != Some(true) {
        return Err(usage(format!(
            "--in-place {relative}: spec.values.{path}: could not place the value in this file's layout (flow style or an unusual indentation?); nothing written: encrypt without --in-place and paste the output"
        )));
    }
    let tmp = file.with_extension("yaml.vworkspace-tmp");
    std::fs::write(&tmp, &edited).map_err(io_error)?;
    if let Ok(meta) = std::fs::metadata(file) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, file).map_err(io_error)?;
    writeln!(
        out,
        "wrote spec.values.{path} of {relative} (bound to cluster {}, namespace {}, instance {})",
        binding.cluster, binding.namespace, binding.instance
    )
    .map_err(io_error)?;
    writeln!(
        out,
        "next: `vworkspace-operator release --cluster {} --key <your release key>`, then commit",
        binding.cluster
    )
    .map_err(io_error)?;
    Ok(0)
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// The key of a `key: ...` line (plain or quoted), and what follows the colon.
fn split_key(line: &str) -> Option<(String, &str)> {
    let t = line.trim_start_matches(' ');
    if t.starts_with("- ") || t == "-" {
        return None;
    }
    let (key, rest) = if let Some(q) = t.strip_prefix('"') {
        let end = q.find('"')?;
        (q[..end].to_owned(), q[end + 1..].strip_prefix(':')?)
    } else if let Some(q) = t.strip_prefix('\'') {
        let end = q.find('\'')?;
        (q[..end].to_owned(), q[end + 1..].strip_prefix(':')?)
    } else {
        let colon = t
            .find(": ")
            .or_else(|| t.strip_suffix(':').map(|s| s.len()))?;
        (t[..colon].trim_end().to_owned(), &t[colon + 1..])
    };
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    Some((key, rest))
}

/// The end (exclusive line index) of the block that belongs to the line at `at` with indent `indent`.
fn block_end(lines: &[&str], at: usize, indent: usize) -> usize {
    let mut end = at + 1;
    let mut last_content = at + 1;
    while end < lines.len() {
        let line = lines[end];
        if is_blank_or_comment(line) {
            end += 1;
            continue;
        }
        if indent_of(line) <= indent {
            break;
        }
        end += 1;
        last_content = end;
    }
    last_content
}

/// Sets the mapping path `segments` of a block-style YAML text to a literal block scalar holding
/// `armored`, keeping every other line as it is. Missing mappings on the path are created.
fn set_block_scalar(text: &str, segments: &[&str], armored: &str) -> Result<String, String> {
    let lines: Vec<&str> = text.lines().collect();
    // (start, end) of the current block's children; indent of the parent (None: document root).
    let mut start = 0usize;
    let mut end = lines.len();
    let mut parent_indent: Option<usize> = None;
    for (depth, segment) in segments.iter().enumerate() {
        if segment.is_empty() || segment.bytes().all(|b| b.is_ascii_digit()) {
            return Err(
                "lists and empty keys are not edited in place; encrypt without --in-place and paste the output"
                    .into(),
            );
        }
        let (child_indent, found) = find_key(&lines[..end], start, segment);
        let Some((i, indent)) = found else {
            // Create the rest of the path at the end of this block.
            let indent = child_indent
                .filter(|ci| parent_indent.is_none_or(|p| *ci > p))
                .unwrap_or_else(|| parent_indent.map_or(0, |p| p + 2));
            return Ok(append_path(
                &lines,
                end,
                indent,
                &segments[depth..],
                armored,
                text,
            ));
        };
        let (_, rest) = split_key(lines[i]).ok_or("unreadable line")?;
        let rest = rest.trim();
        if depth + 1 == segments.len() {
            return replace_leaf(&lines, (i, indent), rest, segment, armored, text);
        }
        if !(rest.is_empty() || rest.starts_with('#')) {
            return Err(format!("{segment} holds a value, not a mapping"));
        }
        start = i + 1;
        end = block_end(&lines, i, indent);
        parent_indent = Some(indent);
    }
    Err("empty path".into())
}

/// In the block `lines[start..]`: the indent of its children and the line and indent of the child
/// `key`, if there is one.
fn find_key(lines: &[&str], start: usize, key: &str) -> (Option<usize>, Option<(usize, usize)>) {
    let child_indent = lines[start..]
        .iter()
        .find(|l| !is_blank_or_comment(l) && !l.trim_start().starts_with("---"))
        .map(|l| indent_of(l));
    let found = child_indent.and_then(|ci| {
        lines
            .iter()
            .enumerate()
            .skip(start)
            .filter(|(_, line)| !is_blank_or_comment(line) && indent_of(line) == ci)
            .find(|(_, line)| split_key(line).is_some_and(|(k, _)| k == key))
            .map(|(i, _)| (i, ci))
    });
    (child_indent, found)
}

/// The text with the value of the key on line `i` (its `rest` after the colon) replaced by the
/// block scalar.
fn replace_leaf(
    lines: &[&str],
    (i, indent): (usize, usize),
    rest: &str,
    segment: &str,
    armored: &str,
    text: &str,
) -> Result<String, String> {
    let value_end = block_end(lines, i, indent);
    if !(rest.is_empty()
        || rest.starts_with('|')
        || rest.starts_with('>')
        || !rest.starts_with(['{', '[', '&', '*']))
    {
        return Err("the value is in flow style or an anchor; edit it by hand".into());
    }
    if rest.is_empty() && value_end > i + 1 {
        return Err("holds a mapping or a list, not a value".into());
    }
    let mut out: Vec<String> = lines[..i].iter().map(|s| (*s).to_owned()).collect();
    out.extend(block_lines(lines[i], indent, segment, armored));
    out.extend(lines[value_end..].iter().map(|s| (*s).to_owned()));
    Ok(join(out, text))
}

/// The text with the mappings `segments` (the last one holding the block scalar) inserted at line
/// `end`, the first at `indent`.
fn append_path(
    lines: &[&str],
    end: usize,
    indent: usize,
    segments: &[&str],
    armored: &str,
    text: &str,
) -> String {
    let mut out: Vec<String> = lines[..end].iter().map(|s| (*s).to_owned()).collect();
    let mut level = indent;
    for (k, seg) in segments.iter().enumerate() {
        if k + 1 == segments.len() {
            out.extend(block_lines("", level, seg, armored));
        } else {
            out.push(format!("{}{seg}:", " ".repeat(level)));
            level += 2;
        }
    }
    out.extend(lines[end..].iter().map(|s| (*s).to_owned()));
    join(out, text)
}

fn block_lines(original: &str, indent: usize, key: &str, armored: &str) -> Vec<String> {
    // Keep the key as written (quoted or not).
    let key_text = match original.trim_start().find(':') {
        Some(_) if !original.is_empty() => {
            let t = original.trim_start();
            let (k, _) = t.split_at(t.len() - split_key(original).map_or(0, |(_, r)| r.len()) - 1);
            k.to_owned()
        }
        _ => key.to_owned(),
    };
    let mut out = vec![format!("{}{key_text}: |", " ".repeat(indent))];
    for line in armored.trim_end().lines() {
        out.push(format!("{}{line}", " ".repeat(indent + 2)));
    }
    out
}

fn join(lines: Vec<String>, original: &str) -> String {
    let mut text = lines.join("\n");
    if original.ends_with('\n') || original.is_empty() {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARMOR: &str =
        "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n";

    #[test]
    fn replaces_a_leaf_and_keeps_comments() {
        let text = "# top comment\nspec:\n  values:\n    # smtp settings\n    smtp:\n      host: mail # the relay\n      password: old\n    other: 1\n";
        let out =
            set_block_scalar(text, &["spec", "values", "smtp", "password"], ARMOR).expect("edit");
        assert_eq!(
            out,
            "# top comment\nspec:\n  values:\n    # smtp settings\n    smtp:\n      host: mail # the relay\n      password: |\n        -----BEGIN AGE ENCRYPTED FILE-----\n        YWdl\n        -----END AGE ENCRYPTED FILE-----\n    other: 1\n"
        );
        // A block scalar is replaced whole.
        let again =
            set_block_scalar(&out, &["spec", "values", "smtp", "password"], ARMOR).expect("edit");
        assert_eq!(again, out);
    }

    #[test]
    fn creates_missing_mappings_and_refuses_what_it_cannot_edit() {
        let text = "spec:\n  chart:\n    name: x\n";
        let out =
            set_block_scalar(text, &["spec", "values", "db", "password"], ARMOR).expect("edit");
        assert_eq!(
            out,
            "spec:\n  chart:\n    name: x\n  values:\n    db:\n      password: |\n        -----BEGIN AGE ENCRYPTED FILE-----\n        YWdl\n        -----END AGE ENCRYPTED FILE-----\n"
        );
        assert!(
            set_block_scalar(
                "spec:\n  values:\n    a:\n      b: 1\n",
                &["spec", "values", "a"],
                ARMOR
            )
            .is_err()
        );
        assert!(
            set_block_scalar("spec:\n  values: {a: 1}\n", &["spec", "values", "a"], ARMOR).is_err()
        );
        assert!(
            set_block_scalar(
                "spec:\n  values:\n    l:\n    - x\n",
                &["spec", "values", "l", "0"],
                ARMOR
            )
            .is_err()
        );
    }
}

/// `reencrypt` arguments.
#[derive(Debug, Args)]
pub struct ReencryptArgs {
    /// The work tree (git's upward discovery finds its root).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// The cluster whose values to re-encrypt (`clusters/<id>/`).
    #[arg(long)]
    pub cluster: String,
    /// An identity file that opens the current values (the old key); repeat for several.
    #[arg(long, required = true)]
    pub identity: Vec<PathBuf>,
    /// The new recipient (age1...).
    #[arg(long)]
    pub recipient: String,
    /// Bind the values that are not bound yet to where they are (migrating to bound values).
    #[arg(long)]
    pub bind: bool,
}

/// `reencrypt`: every encrypted value of a cluster directory, opened with the old identity and
/// encrypted to the new recipient, in place (rotation, like `sops updatekeys`). Bound values keep
/// their binding; a value bound elsewhere than where it is refuses the whole run (nothing written).
pub fn reencrypt(args: &ReencryptArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    vworkspace_core::secrets::parse_recipient(&args.recipient).map_err(usage)?;
    let mut texts = Vec::new();
    for path in &args.identity {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("--identity {}: {e}", path.display())))?;
        texts.push((path.display().to_string(), text));
    }
    let identities = vworkspace_core::secrets::Identities::parse_many(&texts).map_err(usage)?;
    let root = super::inputs::discover(&args.repo);
    let limits = Limits::default();
    let tree = super::release::read_worktree(&root, &args.cluster, &limits)?;
    let rotation = Rotation {
        args,
        identities: &identities,
        limits: &limits,
    };
    let mut edits: Vec<Edit> = Vec::new();
    let mut problems = Vec::new();
    for (relative, entry) in tree.entries() {
        if let vworkspace_core::repository::TreeEntry::File(bytes) = entry
            && let Some(edit) = rotation.file(&root, relative, bytes, &mut problems)?
        {
            edits.push(edit);
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            writeln!(out, "refused {p}").map_err(io_error)?;
        }
        writeln!(out, "nothing was written").map_err(io_error)?;
        return Ok(1);
    }
    // Every edited file must read back with every value re-encrypted, before any file is replaced.
    for edit in &edits {
        edit.check(&limits)?;
    }
    let mut total = 0usize;
    for Edit {
        path,
        shown,
        text,
        count,
    } in &edits
    {
        let tmp = path.with_extension("yaml.vworkspace-tmp");
        std::fs::write(&tmp, text).map_err(io_error)?;
        std::fs::rename(&tmp, path).map_err(io_error)?;
        total += count;
        writeln!(out, "re-encrypted {count} value(s) in {shown}").map_err(io_error)?;
    }
    writeln!(
        out,
        "re-encrypted {total} value(s) in {} file(s) to {}; next: `vworkspace-operator release --cluster {} --key <your release key>`, co-sign, commit; the operator needs the new identity before this release arrives",
        edits.len(),
        args.recipient.trim(),
        args.cluster
    )
    .map_err(io_error)?;
    Ok(0)
}

/// One instance file with its values re-encrypted: where, as shown, its new text, how many values.
struct Edit {
    path: PathBuf,
    shown: String,
    text: String,
    count: usize,
}

impl Edit {
    /// The edited text parses and holds as many encrypted values as it did.
    fn check(&self, limits: &Limits) -> Result<(), CliError> {
        let shown = &self.shown;
        let object = vworkspace_core::yaml::parse_document(self.text.as_bytes(), shown, limits)
            .map_err(|e| {
                usage(format!(
                    "{shown}: the edited file does not parse ({e}); nothing written"
                ))
            })?;
        let mut seen = 0usize;
        if let Some(values) = object.pointer("/spec/values") {
            vworkspace_core::secrets::for_each_armored(values, &mut |_, _| seen += 1);
        }
        if seen != self.count {
            return Err(usage(format!(
                "{shown}: could not re-encrypt every value in place; nothing written"
            )));
        }
        Ok(())
    }
}

/// One `reencrypt` run: the old identities, the new recipient, the limits.
struct Rotation<'a> {
    args: &'a ReencryptArgs,
    identities: &'a vworkspace_core::secrets::Identities,
    limits: &'a Limits,
}

impl Rotation<'_> {
    /// The edit of the file `relative` (an ApplicationInstance with encrypted values), or `None`;
    /// what cannot be re-encrypted goes to `problems`.
    fn file(
        &self,
        root: &std::path::Path,
        relative: &str,
        bytes: &[u8],
        problems: &mut Vec<String>,
    ) -> Result<Option<Edit>, CliError> {
        let parts: Vec<&str> = relative.split('/').collect();
        let ["namespaces", namespace, "applicationinstances", file] = parts.as_slice() else {
            return Ok(None);
        };
        let Some(instance) = file.strip_suffix(".yaml") else {
            return Ok(None);
        };
        let shown = format!("clusters/{}/{relative}", self.args.cluster);
        let object = match vworkspace_core::yaml::parse_document(bytes, &shown, self.limits) {
            Ok(object) => object,
            Err(e) => {
                problems.push(e.to_string());
                return Ok(None);
            }
        };
        let Some(values) = object.pointer("/spec/values") else {
            return Ok(None);
        };
        let mut leaves = Vec::new();
        vworkspace_core::secrets::for_each_armored(values, &mut |p, a| {
            leaves.push((p.to_owned(), a.to_owned()))
        });
        if leaves.is_empty() {
            return Ok(None);
        }
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        for (path, armored) in &leaves {
            let here = Binding {
                cluster: self.args.cluster.clone(),
                namespace: (*namespace).to_owned(),
                instance: instance.to_owned(),
                path: path.clone(),
            };
            let fresh = match self.value(armored, here)? {
                Ok(fresh) => fresh,
                Err(why) => {
                    problems.push(format!("{shown}: spec.values.{path}: {why}"));
                    continue;
                }
            };
            let mut segments = vec!["spec", "values"];
            segments.extend(path.split('.'));
            match set_block_scalar(&text, &segments, &fresh) {
                Ok(edited) => text = edited,
                Err(why) => problems.push(format!("{shown}: spec.values.{path}: {why}")),
            }
        }
        Ok(Some(Edit {
            path: root.join(&shown),
            shown,
            text,
            count: leaves.len(),
        }))
    }

    /// One value opened and encrypted to the new recipient with its binding (or, with `--bind`,
    /// bound to `here`); why not, when it cannot be.
    fn value(&self, armored: &str, here: Binding) -> Result<Result<String, String>, CliError> {
        let (binding, value) =
            match vworkspace_core::secrets::decrypt(armored, self.identities, self.limits) {
                Ok(opened) => opened,
                Err(e) => return Ok(Err(e.to_string())),
            };
        let binding = match binding {
            Some(b) if b != here => {
                return Ok(Err(format!(
                    "bound to another place ({}/{}/{} {}); verify refuses it here, so it is not re-encrypted: encrypt the right value with --in-place",
                    b.cluster, b.namespace, b.instance, b.path
                )));
            }
            Some(b) => Some(b),
            None if self.args.bind => Some(here),
            None => None,
        };
        vworkspace_core::secrets::encrypt(value.expose(), &self.args.recipient, binding.as_ref())
            .map(Ok)
            .map_err(usage)
    }
}
