//! `file://` in process: the source repository is opened with gix and the objects the cache lacks are
//! copied into it, so no `git-upload-pack` (and no `git`) is needed on PATH.
//!
//! What is copied is what a fetch would bring: the objects reachable from the refs the refspecs name,
//! minus what the cache already holds. The cache stays closed under reachability: commits are
//! written oldest first and every tree after its entries, so an interrupted copy never leaves an
//! object whose ancestors or entries are missing, and a present object ends the walk below it. Each
//! object is re-hashed as it is written (a corrupt source object is refused), and the same bounds as
//! a network fetch apply: object count, bytes (uncompressed) and the interrupt flag of the watchdog.
//! Refs move only after every object is in place.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use gix::ObjectId;
use gix::objs::Write as _;

use super::{FetchOptions, SourceError};

/// Trees nested deeper than this are refused (the copy recurses once per level).
const MAX_TREE_DEPTH: usize = 1024;

/// What one copy transferred: (bytes, objects).
pub type Copied = (u64, u64);

struct Copier<'a> {
    source: gix::Repository,
    cache: gix::Repository,
    options: &'a FetchOptions,
    interrupt: &'a AtomicBool,
    shown: String,
    seen: HashSet<ObjectId>,
    bytes: u64,
    objects: u64,
}

/// Copies what `specs` (`+src:dst` refspecs, `*` globs allowed) reach from the repository at `source`
/// into the cache at `cache`, then points the cache's refs at them.
pub fn copy(
    source: &Path,
    cache: &Path,
    specs: &[String],
    options: &FetchOptions,
    interrupt: &AtomicBool,
    shown: &str,
) -> Result<Copied, SourceError> {
    let fail = |e: &dyn std::fmt::Display| SourceError::Fetch {
        url: shown.to_owned(),
        message: e.to_string(),
    };
    let source = gix::open_opts(source, gix::open::Options::isolated()).map_err(|e| fail(&e))?;
    let cache = gix::open_opts(cache, gix::open::Options::isolated()).map_err(|e| fail(&e))?;
    let mut copier = Copier {
        source,
        cache,
        options,
        interrupt,
        shown: shown.to_owned(),
        seen: HashSet::new(),
        bytes: 0,
        objects: 0,
    };
    let updates = copier.ref_updates(specs)?;
    for (_, id) in &updates {
        copier.copy_closure(*id)?;
    }
    for (name, id) in updates {
        copier
            .cache
            .reference(
                name.as_str(),
                id,
                gix::refs::transaction::PreviousValue::Any,
                "fetch (in process)",
            )
            .map_err(|e| fail(&e))?;
    }
    Ok((copier.bytes, copier.objects))
}

impl Copier<'_> {
    fn fail(&self, message: impl std::fmt::Display) -> SourceError {
        SourceError::Fetch {
            url: self.shown.clone(),
            message: message.to_string(),
        }
    }

    /// The (cache ref, object) pairs the refspecs select in the source, objects unpeeled (an
    /// annotated tag stays a tag).
    fn ref_updates(&self, specs: &[String]) -> Result<Vec<(String, ObjectId)>, SourceError> {
        let mut updates = Vec::new();
        for spec in specs {
            let spec = spec.trim_start_matches('+');
            let (from, to) = spec
                .split_once(':')
                .ok_or_else(|| self.fail(format!("bad refspec {spec}")))?;
            if from == "HEAD" {
                let id = self.source.head_id().map_err(|e| self.fail(e))?;
                updates.push((to.to_owned(), id.detach()));
            } else if let (Some(prefix), Some(target)) =
                (from.strip_suffix('*'), to.strip_suffix('*'))
            {
                let refs = self.source.references().map_err(|e| self.fail(e))?;
                for reference in refs.prefixed(prefix).map_err(|e| self.fail(e))? {
                    let reference = reference.map_err(|e| self.fail(e))?;
                    let name = reference.name().as_bstr().to_string();
                    if let Some(id) = reference.target().try_id() {
                        updates.push((format!("{target}{}", &name[prefix.len()..]), id.to_owned()));
                    }
                }
            } else if let Some(mut reference) = self
                .source
                .try_find_reference(from)
                .map_err(|e| self.fail(e))?
            {
                let id = match reference.target().try_id() {
                    Some(id) => id.to_owned(),
                    None => reference.peel_to_id().map_err(|e| self.fail(e))?.detach(),
                };
                updates.push((to.to_owned(), id));
            }
        }
        Ok(updates)
    }

    /// Reads one object of the source.
    fn read(&self, id: ObjectId) -> Result<(gix::objs::Kind, Vec<u8>), SourceError> {
        let object = self
            .source
            .find_object(id)
            .map_err(|e| self.fail(format!("object {id}: {e}")))?;
        Ok((object.kind, object.data.clone()))
    }

    /// Writes one object into the cache, counting it against the bounds.
    fn write(
        &mut self,
        id: ObjectId,
        kind: gix::objs::Kind,
        data: &[u8],
    ) -> Result<(), SourceError> {
        if self.interrupt.load(Ordering::Relaxed) {
            return Err(self.fail("interrupted"));
        }
        self.objects += 1;
        self.bytes += data.len() as u64;
        if self.objects > self.options.max_objects {
            return Err(SourceError::TooManyObjects {
                url: self.shown.clone(),
                count: self.objects,
                limit: self.options.max_objects,
            });
        }
        if self.bytes > self.options.max_pack_bytes {
            return Err(SourceError::TooLarge {
                url: self.shown.clone(),
                limit: self.options.max_pack_bytes,
            });
        }
        let written = self.cache.write_buf(kind, data).map_err(|e| self.fail(e))?;
        if written != id {
            return Err(self.fail(format!(
                "object {id} is corrupt in the source (it hashes to {written})"
            )));
        }
        Ok(())
    }

    fn present(&mut self, id: ObjectId) -> bool {
        !self.seen.insert(id) || self.cache.has_object(id)
    }

    /// Copies `tip` (a commit or tag) and everything it reaches that the cache lacks.
    fn copy_closure(&mut self, tip: ObjectId) -> Result<(), SourceError> {
        let mut tip = tip;
        let mut tags = Vec::new();
        loop {
            let (kind, data) = self.read(tip)?;
            if kind != gix::objs::Kind::Tag {
                break;
            }
            let target = gix::objs::TagRef::from_bytes(&data, gix::hash::Kind::Sha1)
                .map_err(|e| self.fail(format!("tag {tip}: {e}")))?
                .target();
            tags.push((tip, data));
            tip = target;
        }
        for commit in self.new_commits(tip)?.into_iter().rev() {
            let (_, data) = self.read(commit)?;
            let tree = gix::objs::CommitRef::from_bytes(&data, gix::hash::Kind::Sha1)
                .map_err(|e| self.fail(format!("commit {commit}: {e}")))?
                .tree();
            self.copy_tree(tree, 0)?;
            self.write(commit, gix::objs::Kind::Commit, &data)?;
        }
        for (id, data) in tags.into_iter().rev() {
            if !self.cache.has_object(id) {
                self.write(id, gix::objs::Kind::Tag, &data)?;
            }
        }
        Ok(())
    }

    /// The commits reachable from `tip` that the cache lacks, children before parents.
    fn new_commits(&mut self, tip: ObjectId) -> Result<Vec<ObjectId>, SourceError> {
        let mut order = Vec::new();
        let mut stack = vec![tip];
        while let Some(id) = stack.pop() {
            if self.present(id) {
                continue;
            }
            if order.len() as u64 >= self.options.max_objects {
                return Err(SourceError::TooManyObjects {
                    url: self.shown.clone(),
                    count: order.len() as u64,
                    limit: self.options.max_objects,
                });
            }
            let (kind, data) = self.read(id)?;
            if kind != gix::objs::Kind::Commit {
                return Err(self.fail(format!("{id} is a {kind}, not a commit")));
            }
            let commit = gix::objs::CommitRef::from_bytes(&data, gix::hash::Kind::Sha1)
                .map_err(|e| self.fail(format!("commit {id}: {e}")))?;
            stack.extend(commit.parents());
            order.push(id);
        }
        // A parent found late may sit before its child in `order`: sort so every commit follows all
        // of its parents once reversed (a depth-first post-order over the new commits).
        Ok(self.topological(order))
    }

    /// Orders `commits` so that each appears before its parents (reversed later: parents first).
    fn topological(&self, commits: Vec<ObjectId>) -> Vec<ObjectId> {
        let set: HashSet<ObjectId> = commits.iter().copied().collect();
        let mut done = HashSet::new();
        let mut out = Vec::with_capacity(commits.len());
        for start in &commits {
            let mut stack = vec![(*start, false)];
            while let Some((id, expanded)) = stack.pop() {
                if expanded {
                    out.push(id);
                    continue;
                }
                if !done.insert(id) {
                    continue;
                }
                stack.push((id, true));
                if let Ok((_, data)) = self.read(id)
                    && let Ok(commit) =
                        gix::objs::CommitRef::from_bytes(&data, gix::hash::Kind::Sha1)
                {
                    stack.extend(
                        commit
                            .parents()
                            .filter(|p| set.contains(p))
                            .map(|p| (p, false)),
                    );
                }
            }
        }
        // `out` is parents first; the caller reverses, so hand it children first.
        out.reverse();
        out
    }

    /// Copies a tree after everything in it (gitlinks name another repository's commits: skipped).
    fn copy_tree(&mut self, tree: ObjectId, depth: usize) -> Result<(), SourceError> {
        if self.present(tree) {
            return Ok(());
        }
        if depth > MAX_TREE_DEPTH {
            return Err(self.fail(format!(
                "tree {tree} nests deeper than {MAX_TREE_DEPTH} levels"
            )));
        }
        let (_, data) = self.read(tree)?;
        let mut entries = Vec::new();
        for entry in gix::objs::TreeRefIter::from_bytes(&data, gix::hash::Kind::Sha1) {
            let entry = entry.map_err(|e| self.fail(format!("tree {tree}: {e}")))?;
            entries.push((entry.mode, entry.oid.to_owned()));
        }
        for (mode, id) in entries {
            if mode.is_tree() {
                self.copy_tree(id, depth + 1)?;
            } else if (mode.is_blob() || mode.is_link()) && !self.present(id) {
                let (kind, blob) = self.read(id)?;
                self.write(id, kind, &blob)?;
            }
        }
        self.write(tree, gix::objs::Kind::Tree, &data)
    }
}
