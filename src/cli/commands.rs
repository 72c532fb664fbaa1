//! The commands: each builds its settings, reporter, registry client and store, runs the
//! library, writes data to stdout, and returns the exit code (or a [`Failure`] that `run`
//! prints once, with the reference it concerns).

use std::io::{self, Write};

use super::args::{
    GcArgs, ImageArgs, ImagesArgs, InspectArgs, LayersArgs, PullArgs, RmArgs, SaveArgs, TagsArgs,
    UnpackArgs,
};
use super::render as output;
use super::settings::{
    format_of, parse_references, ImageSettings, OutputMode, Settings, UsageError,
};
use super::{emit, interrupt, report_error, reporter_for, stdout_error, with_context, Failure};
use crate::error::{self, Error};
use crate::platform::PlatformChoice;
use crate::pull::resolve::resolve;
use crate::pull::{pull, PullOptions};
use crate::registry::Registry;
use crate::store::cache::Cache;
use crate::store::Store;
use std::sync::Arc;

pub(super) fn cmd_pull(a: PullArgs) -> Result<u8, Failure> {
    let refs = parse_references(&a.references)?;
    let registries: Vec<&str> = refs.iter().map(|r| r.registry()).collect();
    let settings = Settings::from_args(
        &a.image.registry,
        &registries,
        OutputMode::of(a.image.store.json, a.quiet),
    )?;
    let image = ImageSettings::from_args(&a.image)?;
    if a.dry_run {
        return dry_run(&settings, &image, &refs);
    }
    let (reporter, on_interrupt) = super::pull_reporter(&settings, true);
    let registry = Registry::new(
        crate::registry::RegistrySettings {
            preconnect: a.jobs as usize,
            ..settings.registry.clone()
        },
        reporter.clone(),
    )?;
    let opts = PullOptions {
        platform: image.platform.clone(),
        jobs: a.jobs as usize,
        chunk_size: a.chunk_size,
        format: format_of(a.format),
        cache: None,
        cancel: crate::cancel::Cancel::new(),
    };
    interrupt::install(opts.cancel.clone(), on_interrupt);
    let start = std::time::Instant::now();
    let mut out = PullOutput::new(settings.output);
    // Resolve first, reading the store if there is one: when every reference fails here (not
    // found, refused), no store is created (SPEC: Commands).
    let existing = with_context(Store::open(&image.dest), || {
        format!("opening store {}", image.dest.display())
    })?;
    let resolved = crate::pull::resolve_all(&registry, existing.as_ref(), &refs, &opts);
    drop(existing);
    let mut results: Vec<Option<Result<crate::pull::PullReport, Error>>> =
        (0..refs.len()).map(|_| None).collect();
    let mut ok = Vec::new();
    for (i, (r, res)) in resolved.into_iter().enumerate() {
        match res {
            Ok(res) => ok.push((i, (r, Ok(res)))),
            Err(e) => {
                let e = Error::from(crate::pull::PullError::from(e));
                out.failed(&r, &e, &opts.cancel);
                results[i] = Some(Err(e));
            }
        }
    }
    if !ok.is_empty() {
        let (cache, _cache_active) = open_cache(&image)?;
        let opts = PullOptions {
            cache,
            ..opts.clone()
        };
        let store = with_context(Store::create(&image.dest), || {
            format!("opening store {}", image.dest.display())
        })?;
        // Held for the whole pull: gc waits for it (see Store::activity_lock).
        let _active = with_context(store.activity_lock(false), || {
            format!("locking store {}", image.dest.display())
        })?;
        let (places, ok): (Vec<usize>, Vec<_>) = ok.into_iter().unzip();
        for (i, (r, result)) in places
            .into_iter()
            .zip(pull(&registry, &store, ok, &opts, start))
        {
            let result = result.map_err(Error::from);
            if let Err(e) = &result {
                out.failed(&r, e, &opts.cancel);
            }
            results[i] = Some(result);
        }
    }
    // stdout in the order the references were given.
    for (r, result) in refs.iter().zip(results) {
        match result {
            Some(Ok(report)) => out.pulled(&report)?,
            Some(Err(e)) => out.failed_record(r, &e)?,
            None => {}
        }
    }
    let code = out.code;
    if opts.cancel.is_cancelled() {
        let kept = match &image.cache_dir {
            Some(c) => format!(
                "{} and {}",
                c.join(".imagec/partial").display(),
                image.dest.join(".imagec/partial").display()
            ),
            None => image.dest.join(".imagec/partial").display().to_string(),
        };
        let _ = writeln!(
            io::stderr(),
            "imagec: interrupted; what arrived is kept in {kept} and the next pull resumes it"
        );
        return Ok(error::INTERRUPTED);
    }
    Ok(code)
}

/// What `pull` writes per reference: the summary on stderr and a line (digest, JSON record)
/// on stdout, for a failed reference too under `--json` (SPEC: a script sees every reference
/// it asked for).
struct PullOutput {
    mode: OutputMode,
    out: io::StdoutLock<'static>,
    stdout_open: bool,
    code: u8,
}

impl PullOutput {
    fn new(mode: OutputMode) -> PullOutput {
        PullOutput {
            mode,
            out: io::stdout().lock(),
            stdout_open: true,
            code: error::SUCCESS,
        }
    }

    fn pulled(&mut self, report: &crate::pull::PullReport) -> Result<(), Failure> {
        let line = match self.mode {
            OutputMode::Json => output::json_line(report),
            OutputMode::Quiet => format!("{}\n", report.digest),
            OutputMode::Human => {
                let _ = writeln!(io::stderr(), "{}", output::pull_summary(report));
                format!("{} {}\n", report.reference, report.digest)
            }
        };
        self.line(&line)
    }

    /// Said on stderr at once, with the reference it concerns.
    fn failed(
        &mut self,
        r: &crate::reference::Reference,
        e: &Error,
        cancel: &crate::cancel::Cancel,
    ) {
        // An interrupt is said once, at the end, not once per reference.
        if cancel.is_cancelled() {
            return;
        }
        report_error(Some(&format!("pulling {r}")), e);
        if self.code == error::SUCCESS {
            self.code = e.exit_code();
        }
    }

    /// The failure's record on stdout under `--json`.
    fn failed_record(&mut self, r: &crate::reference::Reference, e: &Error) -> Result<(), Failure> {
        if self.mode != OutputMode::Json {
            return Ok(());
        }
        self.line(&output::json_error_line(
            &r.to_string(),
            e.exit_code(),
            &e.to_string(),
        ))
    }

    /// A closed stdout stops the printing, not the outcome: the exit code still says whether
    /// every reference was pulled.
    fn line(&mut self, line: &str) -> Result<(), Failure> {
        if self.stdout_open {
            match emit(&mut self.out, line) {
                Ok(()) => {}
                Err(Failure::Quiet) => self.stdout_open = false,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The shared cache of a command that downloads (created if new), and its activity lock,
/// held for the whole command so that the cache's gc waits for it. A cache this user cannot
/// write is used read-only, with a warning.
fn open_cache(
    image: &ImageSettings,
) -> Result<(Option<Arc<Cache>>, Option<std::fs::File>), Failure> {
    let Some(dir) = &image.cache_dir else {
        return Ok((None, None));
    };
    let context = || format!("opening cache {}", dir.display());
    let cache = with_context(Cache::open(dir), context)?;
    if !cache.writable() {
        let _ = writeln!(
            io::stderr(),
            "imagec: warning: the cache {} is not writable by this user: blobs it holds are linked from it, the others are downloaded into {} alone",
            dir.display(),
            image.dest.display()
        );
    }
    let lock = with_context(cache.activity_lock(false), context)?;
    Ok((Some(Arc::new(cache)), lock))
}

/// `pull --dry-run`: resolve every reference (reading, never writing, the store), plan, and
/// print the plan. Nothing is downloaded or created.
fn dry_run(
    settings: &Settings,
    image: &ImageSettings,
    refs: &[crate::reference::Reference],
) -> Result<u8, Failure> {
    let registry = Registry::new(settings.registry.clone(), reporter_for(settings, false))?;
    let store = with_context(Store::open(&image.dest), || {
        format!("opening store {}", image.dest.display())
    })?;
    let mut code = error::SUCCESS;
    let mut resolved = Vec::new();
    for r in refs {
        match resolve(&registry, store.as_ref(), r, &image.platform) {
            Ok(res) => resolved.push(Some(res)),
            Err(e) => {
                let e = Error::from(e);
                report_error(Some(&format!("resolving {r}")), &e);
                if code == error::SUCCESS {
                    code = e.exit_code();
                }
                resolved.push(None);
            }
        }
    }
    let mut plan = crate::pull::plan::Plan::build(
        store.as_ref(),
        &resolved.iter().map(Option::as_ref).collect::<Vec<_>>(),
    );
    // A dry run makes nothing: a cache that is not there yet holds nothing.
    let cache_dir = image.cache_dir.as_ref();
    if let Some(dir) = cache_dir.filter(|d| d.join(crate::store::cache::MARKER).exists()) {
        let cache = with_context(Cache::open(dir), || {
            format!("opening cache {}", dir.display())
        })?;
        plan.mark_cached(&cache);
    }
    let text = match settings.output {
        OutputMode::Json => output::json_pretty(&output::plan_doc(&plan, &resolved)),
        OutputMode::Quiet | OutputMode::Human => output::plan_table(&plan),
    };
    emit(&mut io::stdout().lock(), &text)?;
    Ok(code)
}

/// Shared by `layers` and `inspect`: resolve without writing to the store. With `from_store`,
/// manifests the store holds are read from it (after a HEAD); without, they are fetched.
fn resolve_remote(
    reference: &str,
    a: &ImageArgs,
    from_store: bool,
) -> Result<
    (
        Settings,
        Registry,
        Option<Store>,
        crate::pull::resolve::Resolved,
    ),
    Failure,
> {
    let reference = parse_references(&[reference.to_string()])?.remove(0);
    let settings = Settings::from_args(
        &a.registry,
        &[reference.registry()],
        OutputMode::of(a.store.json, false),
    )?;
    let image = ImageSettings::from_args(a)?;
    if image.platform == PlatformChoice::All {
        return Err(Error::Unsupported(
            "--platform all is for pull; layers and inspect show one platform",
        )
        .into());
    }
    let reporter = reporter_for(&settings, false);
    let registry = Registry::new(settings.registry.clone(), reporter)?;
    let store = Store::open(&image.dest)
        .ok()
        .flatten()
        .filter(|_| from_store);
    let resolved = with_context(
        resolve(&registry, store.as_ref(), &reference, &image.platform),
        || format!("resolving {reference}"),
    )?;
    Ok((settings, registry, store, resolved))
}

pub(super) fn cmd_layers(a: LayersArgs) -> Result<u8, Failure> {
    if a.files {
        return layers_files(a);
    }
    let (settings, registry, store, resolved) = resolve_remote(&a.reference, &a.image, true)?;
    // What `layers` shows is the plan for this one reference.
    let plan = crate::pull::plan::Plan::build(store.as_ref(), &[Some(&resolved)]);
    let layers = with_context(
        crate::pull::describe::layer_rows(&registry, store.as_ref(), &resolved, &plan),
        || format!("reading the config of {}", resolved.reference),
    )?;
    let text = if settings.output == OutputMode::Json {
        output::json_pretty(&layers)
    } else {
        output::layers_table(&layers)
    };
    emit(&mut io::stdout().lock(), &text)?;
    Ok(error::SUCCESS)
}

/// Images pulled into the store (what it lacked), for the commands that use their blobs:
/// `layers --files`, `unpack` and `save`. Every reference must resolve and pull, or the
/// command stops with the first failure. The store's activity lock is held while this lives.
struct Pulled {
    settings: Settings,
    registry: Registry,
    store: Store,
    images: Vec<(crate::pull::resolve::Resolved, crate::pull::PullReport)>,
    cancel: crate::cancel::Cancel,
    _active: (std::fs::File, Option<std::fs::File>),
}

impl Pulled {
    /// The layer rows (`layers --json`) of image `i`, diff_ids included (read after the pull:
    /// schema1's are learned by pulling).
    fn rows(&self, i: usize) -> Result<Vec<crate::pull::describe::LayerRow>, Failure> {
        let resolved = &self.images[i].0;
        let plan = crate::pull::plan::Plan::build(Some(&self.store), &[Some(resolved)]);
        with_context(
            crate::pull::describe::layer_rows(&self.registry, Some(&self.store), resolved, &plan),
            || format!("reading the config of {}", resolved.reference),
        )
    }

    /// Progress and Ctrl-C for what the command does with the stored blobs.
    fn watch(&self) -> crate::pull::files::Watch<'_> {
        crate::pull::files::Watch {
            store: &self.store,
            reporter: self.registry.reporter().as_ref(),
            cancel: &self.cancel,
        }
    }
}

fn pull_images(
    references: &[String],
    a: &ImageArgs,
    quiet: bool,
    what: &'static str,
) -> Result<Pulled, Failure> {
    let refs = parse_references(references)?;
    let registries: Vec<&str> = refs.iter().map(|r| r.registry()).collect();
    let settings = Settings::from_args(
        &a.registry,
        &registries,
        OutputMode::of(a.store.json, quiet),
    )?;
    let image = ImageSettings::from_args(a)?;
    if image.platform == PlatformChoice::All {
        return Err(Error::Unsupported(what).into());
    }
    let (reporter, on_interrupt) = super::pull_reporter(&settings, true);
    let jobs = 4;
    let registry = Registry::new(
        crate::registry::RegistrySettings {
            preconnect: jobs,
            ..settings.registry.clone()
        },
        reporter,
    )?;
    let opts = PullOptions {
        platform: image.platform.clone(),
        jobs,
        chunk_size: crate::pull::chunks::DEFAULT_CHUNK_SIZE,
        format: crate::pull::Format::Oci,
        cache: None,
        cancel: crate::cancel::Cancel::new(),
    };
    interrupt::install(opts.cancel.clone(), on_interrupt);
    let existing = with_context(Store::open(&image.dest), || {
        format!("opening store {}", image.dest.display())
    })?;
    let mut resolved = Vec::new();
    for (r, res) in crate::pull::resolve_all(&registry, existing.as_ref(), &refs, &opts) {
        let res = with_context(res, || format!("resolving {r}"))?;
        resolved.push((r, res));
    }
    drop(existing);
    let (cache, cache_active) = open_cache(&image)?;
    let opts = PullOptions { cache, ..opts };
    let store = with_context(Store::create(&image.dest), || {
        format!("opening store {}", image.dest.display())
    })?;
    let active = with_context(store.activity_lock(false), || {
        format!("locking store {}", image.dest.display())
    })?;
    let keep: Vec<_> = resolved.iter().map(|(_, res)| res.clone()).collect();
    let start = std::time::Instant::now();
    let pulled = pull(
        &registry,
        &store,
        resolved.into_iter().map(|(r, res)| (r, Ok(res))).collect(),
        &opts,
        start,
    );
    let mut images = Vec::new();
    for ((r, result), res) in pulled.into_iter().zip(keep) {
        if opts.cancel.is_cancelled() {
            return Err(Error::Interrupted.into());
        }
        images.push((res, with_context(result, || format!("pulling {r}"))?));
    }
    Ok(Pulled {
        settings,
        registry,
        store,
        images,
        cancel: opts.cancel,
        _active: (active, cache_active),
    })
}

/// `layers --files`: pull what the store lacks (with progress, as `pull`), then read each layer
/// once from the store (SPEC: layers --files).
fn layers_files(a: LayersArgs) -> Result<u8, Failure> {
    let p = pull_images(
        std::slice::from_ref(&a.reference),
        &a.image,
        false,
        "--platform all is for pull; layers shows one platform",
    )?;
    let rows = p.rows(0)?;
    let resolved = &p.images[0].0;
    let changes = with_context(
        crate::pull::files::layer_changes(resolved.images[0].layers(), p.watch()),
        || format!("reading the layers of {}", resolved.reference),
    )?;
    let text = if p.settings.output == OutputMode::Json {
        output::json_pretty(&output::files_doc(&rows, &changes))
    } else {
        output::files_table(&rows, &changes)
    };
    emit(&mut io::stdout().lock(), &text)?;
    Ok(error::SUCCESS)
}

/// `unpack REF DIR`: pull what the store lacks, then apply the layers base first into DIR,
/// which must be absent or empty (SPEC: unpack).
pub(super) fn cmd_unpack(a: UnpackArgs) -> Result<u8, Failure> {
    let dir = a.dir.clone();
    let fresh = match std::fs::read_dir(&dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(_) => false,
    };
    if !fresh || (dir.exists() && !dir.is_dir()) {
        return Err(UsageError::UnpackTarget(dir).into());
    }
    let p = pull_images(
        std::slice::from_ref(&a.reference),
        &a.image,
        a.quiet,
        "--platform all is for pull; unpack takes one platform",
    )?;
    let rows = p.rows(0)?;
    let (resolved, report) = &p.images[0];
    let reference = resolved.reference.clone();
    std::fs::create_dir_all(&dir).map_err(|source| crate::store::StoreError::Io {
        action: "creating",
        path: dir.clone(),
        source,
    })?;
    let result = crate::pull::files::unpack(resolved.images[0].layers(), &rows, &dir, p.watch());
    let applied = match result {
        Ok(applied) => applied,
        Err(e) => {
            // Nothing outside DIR was touched; what is inside is partial.
            return Err(Failure::Error(
                Some(format!("unpacking {reference} into {}", dir.display())),
                Box::new(e.into()),
            ));
        }
    };
    if p.settings.output == OutputMode::Json {
        let doc = serde_json::json!({
            "reference": reference.to_string(),
            "digest": report.digest,
            "dir": dir,
            "layers": rows.len(),
            "entries": applied.entries,
            "bytes": applied.bytes,
            "skipped": applied.skipped,
        });
        emit(&mut io::stdout().lock(), &output::json_pretty(&doc))?;
    } else if p.settings.output == OutputMode::Human {
        let skipped = if applied.skipped.is_empty() {
            String::new()
        } else {
            format!(
                ", {} skipped (device nodes need root)",
                applied.skipped.len()
            )
        };
        let _ = writeln!(
            io::stderr(),
            "Unpacked {reference} into {} ({}, {} entries, {}{skipped})",
            dir.display(),
            crate::cli::progress::plural(rows.len(), "layer"),
            applied.entries,
            crate::cli::progress::human_size(applied.bytes),
        );
    }
    Ok(error::SUCCESS)
}

/// `save REF... -o FILE`: pull what the store lacks, then write one archive of every image
/// (SPEC: save): to a temp file beside FILE renamed into place, or to stdout with `-o -`.
pub(super) fn cmd_save(a: SaveArgs) -> Result<u8, Failure> {
    use std::io::IsTerminal;
    let to_stdout = a.output.as_os_str() == "-";
    if to_stdout && io::stdout().is_terminal() {
        return Err(UsageError::ArchiveToTerminal.into());
    }
    let p = pull_images(
        &a.references,
        &a.image,
        a.quiet,
        "--platform all is for pull; a docker archive holds images, so save takes one platform",
    )?;
    let (settings, store) = (&p.settings, &p.store);
    let images: Vec<crate::archive::SavedImage> = p
        .images
        .iter()
        .map(|(res, report)| crate::archive::SavedImage {
            reference: res.reference.clone(),
            manifest: report.stored_digest.clone(),
        })
        .collect();
    let written = if to_stdout {
        let mut out = io::stdout().lock();
        match crate::archive::save(store, &images, &mut out, p.watch().reporter, &p.cancel) {
            Err(crate::archive::ArchiveError::Write(e))
                if e.kind() == io::ErrorKind::BrokenPipe =>
            {
                return Err(Failure::Quiet)
            }
            r => r?,
        }
        None
    } else {
        Some(save_to_file(&p, &images, &a.output)?)
    };
    if settings.output == OutputMode::Json {
        let doc = serde_json::json!({
            "file": a.output,
            "images": images.iter().map(|i| serde_json::json!({
                "reference": i.reference.to_string(),
                "manifest": i.manifest,
            })).collect::<Vec<_>>(),
            "bytes": written,
        });
        emit(&mut io::stderr().lock(), &output::json_pretty(&doc))?;
    } else if settings.output == OutputMode::Human {
        if let Some(bytes) = written {
            let _ = writeln!(
                io::stderr(),
                "Saved {} to {} ({})",
                crate::cli::progress::plural(images.len(), "image"),
                a.output.display(),
                crate::cli::progress::human_size(bytes)
            );
        }
    }
    Ok(error::SUCCESS)
}

/// The archive into a temp file beside `path`, synced, then renamed over it: a failed save
/// leaves no partial FILE. Returns its size.
fn save_to_file(
    p: &Pulled,
    images: &[crate::archive::SavedImage],
    path: &std::path::Path,
) -> Result<u64, Failure> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let io_err = |action: &'static str, p: &std::path::Path| {
        let p = p.to_path_buf();
        move |source| crate::store::StoreError::Io {
            action,
            path: p,
            source,
        }
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".imagec-save-")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(&dir)
        .map_err(io_err("creating a temp file in", &dir))?;
    // Straight to the file, unbuffered: std's io::copy from a blob's File into it becomes
    // copy_file_range, the blob bytes never passing through user space.
    let reporter = p.registry.reporter().as_ref();
    crate::archive::save(&p.store, images, tmp.as_file_mut(), reporter, &p.cancel)?;
    tmp.as_file()
        .sync_all()
        .map_err(io_err("syncing", tmp.path()))?;
    let size = tmp
        .as_file()
        .metadata()
        .map_err(io_err("reading", tmp.path()))?
        .len();
    tmp.persist(path)
        .map_err(|e| io_err("renaming into", path)(e.error))?;
    Ok(size)
}

pub(super) fn cmd_inspect(a: InspectArgs) -> Result<u8, Failure> {
    // --raw promises the bytes as served: the store may hold a schema1 manifest only as its
    // payload, so ask the registry.
    let (_settings, registry, store, resolved) = resolve_remote(&a.reference, &a.image, !a.raw)?;
    let mut out = io::stdout().lock();
    if a.raw {
        match out.write_all(&resolved.top.bytes).and_then(|_| out.flush()) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Err(Failure::Quiet),
            r => r.map_err(stdout_error)?,
        }
        return Ok(error::SUCCESS);
    }
    let doc = with_context(
        crate::pull::describe::inspect_doc(
            &registry,
            store.as_ref(),
            &resolved,
            a.full || a.image.store.json,
        ),
        || format!("reading the config of {}", resolved.reference),
    )?;
    emit(&mut out, &output::json_pretty(&doc))?;
    Ok(error::SUCCESS)
}

pub(super) fn cmd_tags(a: TagsArgs) -> Result<u8, Failure> {
    let reference = parse_references(std::slice::from_ref(&a.repository))?.remove(0);
    // `alpine:3.20` or `app@sha256:...` names an image, not a repository (skopeo list-tags
    // refuses them too): say what to drop rather than list a repository the user did not name.
    let last = a.repository.rsplit('/').next().unwrap_or("");
    if let Some(i) = last.find([':', '@']) {
        return Err(UsageError::TagsOfATag(last[i..].to_string()).into());
    }
    let settings = Settings::from_args(
        &a.registry,
        &[reference.registry()],
        OutputMode::of(a.json, false),
    )?;
    let registry = Registry::new(settings.registry.clone(), reporter_for(&settings, false))?;
    let repository = format!("{}/{}", reference.registry(), reference.repository());
    let tags = with_context(
        registry.list_tags(&reference, settings.tags_page, None),
        || format!("listing the tags of {repository}"),
    )?;
    let text = if settings.output == OutputMode::Json {
        output::json_pretty(&serde_json::json!({ "repository": repository, "tags": tags }))
    } else {
        tags.iter().map(|t| format!("{t}\n")).collect()
    };
    emit(&mut io::stdout().lock(), &text)?;
    Ok(error::SUCCESS)
}

pub(super) fn cmd_images(a: ImagesArgs) -> Result<u8, Failure> {
    let store = with_context(Store::open(&a.store.dest), || {
        format!("opening store {}", a.store.dest.display())
    })?;
    let mut rows = Vec::new();
    if let Some(s) = &store {
        let read = || format!("reading store {}", a.store.dest.display());
        for entry in with_context(s.raw_entries(), read)? {
            rows.push(with_context(s.summary(&entry), read)?);
        }
    }
    // Listed with what could be read, and said on stderr: a script reading stdout still gets
    // every entry, a person sees what is wrong.
    for r in &rows {
        for w in &r.warnings {
            let name = r.reference.as_deref().unwrap_or("an entry without a name");
            let _ = writeln!(io::stderr(), "imagec: warning: {name}: {w}");
        }
    }
    let text = if a.store.json {
        output::json_pretty(&rows)
    } else {
        output::images_table(&rows)
    };
    emit(&mut io::stdout().lock(), &text)?;
    Ok(error::SUCCESS)
}

/// The store for a maintenance command: it must exist (a missing store is "not found").
fn existing_store(dest: &std::path::Path) -> Result<Store, Failure> {
    match with_context(Store::open(dest), || {
        format!("opening store {}", dest.display())
    })? {
        Some(s) => Ok(s),
        None => Err(Error::NoStore(dest.to_path_buf()).into()),
    }
}

pub(super) fn cmd_rm(a: RmArgs) -> Result<u8, Failure> {
    let refs = parse_references(&a.references)?;
    let store = existing_store(&a.store.dest)?;
    let names: Vec<String> = refs.iter().map(|r| r.to_string()).collect();
    let removed = with_context(store.remove_entries(&names), || {
        format!("updating {}", a.store.dest.join("index.json").display())
    })?;
    let mut code = error::SUCCESS;
    for n in &names {
        if !removed
            .iter()
            .any(|d| crate::store::ref_name(d) == Some(n.as_str()))
        {
            report_error(None, &Error::NotInStore(n.clone()));
            code = error::NOT_FOUND;
        }
    }
    let text = if a.store.json {
        let rows: Vec<_> = removed
            .iter()
            .map(|d| serde_json::json!({ "reference": crate::store::ref_name(d), "digest": d.digest }))
            .collect();
        output::json_pretty(&rows)
    } else {
        removed
            .iter()
            .map(|d| format!("{} {}\n", crate::store::ref_name(d).unwrap_or(""), d.digest))
            .collect()
    };
    emit(&mut io::stdout().lock(), &text)?;
    Ok(code)
}

pub(super) fn cmd_gc(a: GcArgs) -> Result<u8, Failure> {
    // No store is nothing to collect, as it is nothing to list for `images`.
    let store = match &a.cache_dir {
        Some(_) => None,
        None => with_context(Store::open(&a.store.dest), || {
            format!("opening store {}", a.store.dest.display())
        })?,
    };
    let report = match (&a.cache_dir, &store) {
        // The cache alone; no cache (an absent or empty directory) is nothing to collect
        // either, and none is made.
        (Some(dir), _) if std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none()) => {
            crate::store::gc::GcReport {
                dry_run: a.dry_run,
                ..Default::default()
            }
        }
        (Some(dir), _) => {
            let context = || format!("collecting cache {}", dir.display());
            let cache = with_context(Cache::open(dir), context)?;
            let keep = std::time::Duration::from_secs(u64::from(a.keep_days) * 86400);
            with_context(cache.gc(keep, a.dry_run), context)?
        }
        (None, store) => match store {
            Some(store) => with_context(crate::store::gc::gc(store, a.dry_run, a.force), || {
                format!("collecting store {}", a.store.dest.display())
            })?,
            None => crate::store::gc::GcReport {
                dry_run: a.dry_run,
                ..Default::default()
            },
        },
    };
    for w in &report.warnings {
        let _ = writeln!(
            io::stderr(),
            "imagec: warning: {}: {} (--force: keeping what it reaches)",
            w.entry,
            w.problem
        );
    }
    let text = if a.store.json {
        output::json_pretty(&report)
    } else {
        let mut t = String::new();
        for b in &report.blobs {
            t.push_str(&format!(
                "{} {}\n",
                b.digest,
                crate::cli::progress::human_size(b.size)
            ));
        }
        for f in &report.files {
            t.push_str(&format!(
                "{} {}\n",
                f.path.display(),
                crate::cli::progress::human_size(f.size)
            ));
        }
        t
    };
    emit(&mut io::stdout().lock(), &text)?;
    let _ = writeln!(
        io::stderr(),
        "{} {} blobs and {} stale files, {}",
        if a.dry_run { "would free" } else { "freed" },
        report.blobs.len(),
        report.files.len(),
        crate::cli::progress::human_size(report.bytes_freed)
    );
    Ok(error::SUCCESS)
}
