//! The commands: each builds its settings, reporter, registry client and store, runs the
//! library, writes data to stdout, and returns the exit code (or a [`Failure`] that `run`
//! prints once, with the reference it concerns).

use std::io::{self, Write};

use super::args::{GcArgs, ImagesArgs, InspectArgs, PullArgs, RemoteArgs, RmArgs};
use super::render as output;
use super::settings::{parse_references, OutputMode, Settings};
use super::{emit, interrupt, report_error, reporter_for, stdout_error, with_context, Failure};
use crate::error::{self, Error};
use crate::platform::PlatformChoice;
use crate::pull::resolve::resolve;
use crate::pull::{pull, PullOptions};
use crate::registry::Registry;
use crate::store::Store;

pub(super) fn cmd_pull(a: PullArgs) -> Result<u8, Failure> {
    let refs = parse_references(&a.references)?;
    let registries: Vec<&str> = refs.iter().map(|r| r.registry()).collect();
    let settings = Settings::from_args(&a.common, &registries)?;
    if a.dry_run {
        return dry_run(&settings, &refs);
    }
    let reporter = reporter_for(&settings, true);
    let registry = Registry::new(settings.registry.clone(), reporter.clone())?;
    let store = with_context(Store::create(&settings.dest), || {
        format!("opening store {}", settings.dest.display())
    })?;
    // Held for the whole pull: gc waits for it (see Store::activity_lock).
    let _active = with_context(store.activity_lock(false), || {
        format!("locking store {}", settings.dest.display())
    })?;
    let opts = PullOptions {
        platform: settings.platform.clone(),
        jobs: settings.jobs,
        format: settings.format,
        cancel: crate::cancel::Cancel::new(),
    };
    let mut code = error::SUCCESS;
    let mut out = io::stdout().lock();
    let mut stdout_open = true;
    interrupt::install(opts.cancel.clone());
    for (r, result) in pull(&registry, &store, &refs, &opts) {
        match result {
            Ok(report) => {
                let line = match settings.output {
                    OutputMode::Json => output::json_line(&report),
                    OutputMode::Quiet => format!("{}\n", report.digest),
                    OutputMode::Human => {
                        let _ = writeln!(io::stderr(), "{}", output::pull_summary(&report));
                        format!("{} {}\n", report.reference, report.digest)
                    }
                };
                // A closed stdout stops the printing, not the outcome: the exit code still says
                // whether every reference was pulled.
                if stdout_open {
                    match emit(&mut out, &line) {
                        Ok(()) => {}
                        Err(Failure::Quiet) => stdout_open = false,
                        Err(e) => return Err(e),
                    }
                }
            }
            // Said once below, not once per reference.
            Err(_) if opts.cancel.is_cancelled() => {}
            Err(e) => {
                let e = Error::from(e);
                report_error(Some(&format!("pulling {r}")), &e);
                if code == error::SUCCESS {
                    code = e.exit_code();
                }
            }
        }
    }
    if opts.cancel.is_cancelled() {
        let _ = writeln!(
            io::stderr(),
            "imagec: interrupted; what arrived is kept in {} and the next pull resumes it",
            store.root().join(".imagec/partial").display()
        );
        return Ok(error::INTERRUPTED);
    }
    Ok(code)
}

/// `pull --dry-run`: resolve every reference (reading, never writing, the store), plan, and
/// print the plan. Nothing is downloaded or created.
fn dry_run(settings: &Settings, refs: &[crate::reference::Reference]) -> Result<u8, Failure> {
    let registry = Registry::new(settings.registry.clone(), reporter_for(settings, false))?;
    let store = with_context(Store::open(&settings.dest), || {
        format!("opening store {}", settings.dest.display())
    })?;
    let mut code = error::SUCCESS;
    let mut resolved = Vec::new();
    for r in refs {
        match resolve(&registry, store.as_ref(), r, &settings.platform) {
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
    let plan = crate::pull::plan::Plan::build(
        store.as_ref(),
        &resolved.iter().map(Option::as_ref).collect::<Vec<_>>(),
    );
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
    a: &RemoteArgs,
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
    let reference = parse_references(std::slice::from_ref(&a.reference))?.remove(0);
    let settings = Settings::from_args(&a.common, &[reference.registry()])?;
    if settings.platform == PlatformChoice::All {
        return Err(Error::Unsupported(
            "--platform all is for pull; layers and inspect show one platform",
        )
        .into());
    }
    let reporter = reporter_for(&settings, false);
    let registry = Registry::new(settings.registry.clone(), reporter)?;
    let store = Store::open(&settings.dest)
        .ok()
        .flatten()
        .filter(|_| from_store);
    let resolved = with_context(
        resolve(&registry, store.as_ref(), &reference, &settings.platform),
        || format!("resolving {reference}"),
    )?;
    Ok((settings, registry, store, resolved))
}

pub(super) fn cmd_layers(a: RemoteArgs) -> Result<u8, Failure> {
    let (settings, registry, store, resolved) = resolve_remote(&a, true)?;
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

pub(super) fn cmd_inspect(a: InspectArgs) -> Result<u8, Failure> {
    // --raw promises the bytes as served: the store may hold a schema1 manifest only as its
    // payload, so ask the registry.
    let (_settings, registry, store, resolved) = resolve_remote(&a.remote, !a.raw)?;
    let mut out = io::stdout().lock();
    if a.raw {
        match out.write_all(&resolved.top.bytes).and_then(|_| out.flush()) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Err(Failure::Quiet),
            r => r.map_err(stdout_error)?,
        }
        return Ok(error::SUCCESS);
    }
    let doc = with_context(
        crate::pull::describe::inspect_doc(&registry, store.as_ref(), &resolved),
        || format!("reading the config of {}", resolved.reference),
    )?;
    emit(&mut out, &output::json_pretty(&doc))?;
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
    let store = existing_store(&a.store.dest)?;
    let report = with_context(crate::store::gc::gc(&store, a.dry_run, a.force), || {
        format!("collecting store {}", a.store.dest.display())
    })?;
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
