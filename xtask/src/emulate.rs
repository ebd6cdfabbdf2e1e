//! `cargo xtask emulate`: run the AVX-512 kernels' tests on an emulated AVX-512 CPU.
//!
//! This project's machines have AVX2 only, so the AVX-512 kernels (f32 GEMM, GELU, int8 VNNI)
//! would otherwise never run. Bochs (Debian's package) emulates an Ice Lake (AVX-512
//! F/CD/BW/DQ/VL, VNNI); it boots Debian's cloud kernel from an ISO (isolinux) with an
//! initramfs holding the tensor crate's test programs, built static, and `koembed-emu-init` as
//! PID 1, which runs them with `KOEMBED_AVX512=1` and reports on the serial port; this task
//! reads the serial log, shows the tests' output and fails unless every test program passed on
//! a CPU with AVX-512F.
//!
//! The kernel runs with a few CPUID features cleared to avoid Bochs 2.7's bugs (see
//! [`CLEAR_CPUID`]). Bochs 2.7 has no AVX-512 BF16, so `vdpbf16ps` cannot be tested here.
//!
//! Tools come from Debian's packages (installed with apt-get when missing and run as root):
//! bochs, bochsbios, vgabios, isolinux, syslinux-common, xorriso; the kernel package
//! is downloaded with `apt-get download` into `models/.downloads/emulate/`.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

use crate::paths;

/// The emulated CPU: AVX-512 F/CD/BW/DQ/VL and VNNI (see the module docs).
const CPU_MODEL: &str = "corei7_icelake_u";
/// CPUID feature bits the guest kernel must ignore (`clearcpuid=`, Linux's word·32 + bit):
/// XSAVEC and XSAVES (321, 323): Bochs reports the standard XSAVE size for the compacted
/// format, so Linux 6.1 would turn XSAVE, and with it AVX, off; PKU and OSPKE (515, 516): Bochs
/// lists the PKRU state with an empty CPUID sub-leaf; UMIP, RDPID and FSRM (514, 534, 580):
/// with these the kernel hangs in an exception loop early in boot (which one, not isolated).
const CLEAR_CPUID: &str = "321,323,514,515,516,534,580";
/// Tests left out under emulation, by name: `integer_inputs_are_exact` builds its reference
/// with a 245 M-step scalar loop, more than 9 minutes emulated; the AVX-512 kernel's exactness
/// is still tested by `simd_kernels_agree_bit_for_bit` (bit for bit against the AVX2 kernel,
/// which runs the integer test natively) and the float test's bound. The GELU's relative-error
/// and ulp tests evaluate the scalar twin and an f64 erfc at 18 M points each; they test no
/// CPU-dependent code (the kernels are held bit for bit to the twin under emulation).
/// `weights_over_4_mb_take_the_kernels_m_block` builds a 259 M-step reference like the
/// integer test's; the AVX-512 kernel's large-weight M block then runs under emulation
/// untested (on AVX-512 hardware the test runs natively in the README's test command), and
/// so does `packed_rows_are_kept_across_column_chunks` (216 M steps) for the packed rows kept
/// across a task's column chunks.
const SKIP_UNDER_EMULATION: &[&str] = &[
    "integer_inputs_are_exact",
    "weights_over_4_mb_take_the_kernels_m_block",
    "packed_rows_are_kept_across_column_chunks",
    "relative_error_for_negative_x",
    "few_ulps_from_the_correctly_rounded_gelu",
];
/// Test programs of `koembed-tensor` that exercise the AVX-512 kernels.
const DEFAULT_TESTS: &[&str] = &["packed_gemm", "int8_gemm", "gelu_f32"];
const DEBIAN_PACKAGES: &[&str] = &[
    "bochs",
    "bochsbios",
    "vgabios",
    "isolinux",
    "syslinux-common",
    "xorriso",
];
const ISOLINUX_BIN: &str = "/usr/lib/ISOLINUX/isolinux.bin";
const LDLINUX_C32: &str = "/usr/lib/syslinux/modules/bios/ldlinux.c32";
/// Printed by `koembed-emu-init`.
const MARK: &str = "KOEMBED-EMU";

#[derive(clap::Args)]
pub struct Args {
    /// Test programs of koembed-tensor to run (file stems under crates/tensor/tests).
    #[arg(long, value_delimiter = ',', default_values = DEFAULT_TESTS)]
    tests: Vec<String>,
    /// Arguments for the test harness inside the emulator (a name filter, `--skip`, ...).
    #[arg(trailing_var_arg = true)]
    harness_args: Vec<String>,
    /// Bochs CPU model (`bochs --help cpu` lists them).
    #[arg(long, default_value = CPU_MODEL)]
    cpu: String,
    /// Give up after this many minutes of emulation.
    #[arg(long, default_value_t = 40)]
    timeout_minutes: u64,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            tests: DEFAULT_TESTS.iter().map(|t| t.to_string()).collect(),
            harness_args: Vec::new(),
            cpu: CPU_MODEL.to_string(),
            timeout_minutes: 40,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let work = paths::workspace_root().join("target").join("emulate");
    let boot = work.join("boot");
    if boot.exists() {
        fs::remove_dir_all(&boot).with_context(|| format!("clearing {}", boot.display()))?;
    }
    fs::create_dir_all(boot.join("isolinux"))?;

    install_tools()?;
    let kernel = fetch_kernel()?;
    let programs = build_static(&work, &args.tests)?;

    let mut initramfs = Cpio::default();
    initramfs.dir("tests");
    for (name, path) in &programs {
        initramfs.file(&format!("tests/{name}"), &read(path)?, 0o755);
    }
    initramfs.file("init", &read(&build_init(&work)?)?, 0o755);
    fs::write(boot.join("initrd.img"), initramfs.finish())?;
    fs::copy(&kernel, boot.join("vmlinuz"))?;
    fs::copy(ISOLINUX_BIN, boot.join("isolinux/isolinux.bin"))?;
    fs::copy(LDLINUX_C32, boot.join("isolinux/ldlinux.c32"))?;
    // Everything after `--` reaches PID 1 as arguments; unknown `name=value` as environment.
    let cmdline = format!(
        "initrd=/initrd.img console=ttyS0 rdinit=/init loglevel=4 nosmp mitigations=off \
         clearcpuid={CLEAR_CPUID} KOEMBED_AVX512=1 KOEMBED_TEST_GEMM_KERNELS=Avx512 \
         KOEMBED_TEST_INT8_KERNELS=Avx512Vnni -- {} {}",
        SKIP_UNDER_EMULATION
            .iter()
            .map(|t| format!("--skip {t}"))
            .collect::<Vec<_>>()
            .join(" "),
        args.harness_args.join(" ")
    );
    fs::write(
        boot.join("isolinux/isolinux.cfg"),
        format!("DEFAULT k\nPROMPT 0\nTIMEOUT 0\nLABEL k\n  KERNEL /vmlinuz\n  APPEND {cmdline}\n"),
    )?;
    let iso = work.join("boot.iso");
    let status = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(&iso)
        .args(["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat"])
        .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
        .arg(&boot)
        .status()
        .context("running xorriso")?;
    ensure!(status.success(), "xorriso failed ({status})");

    let serial = work.join("serial.log");
    let names: Vec<&str> = programs.iter().map(|(n, _)| n.as_str()).collect();
    let timeout = Duration::from_secs(args.timeout_minutes * 60);
    let log = run_bochs(&work, &args.cpu, &iso, &serial, timeout)?;
    check(&log, &names)
}

/// The test programs' results from the serial log: every one must have run and exited 0.
fn check(log: &str, names: &[&str]) -> anyhow::Result<()> {
    ensure!(
        log.contains(&format!("{MARK}-CPU avx512f+fma=true")),
        "the emulated CPU did not report AVX-512F and FMA: nothing was tested (see the log above)"
    );
    let mut failed = Vec::new();
    for name in names {
        let prefix = format!("{MARK}-EXIT {name} ");
        match log.lines().find_map(|l| l.trim().strip_prefix(&prefix)) {
            Some(rest) if rest.split_whitespace().next() == Some("0") => {}
            Some(rest) => failed.push(format!("{name}: exit {rest}")),
            None => failed.push(format!("{name}: no result")),
        }
    }
    if !failed.is_empty() {
        bail!("under emulation: {}", failed.join("; "));
    }
    println!(
        "xtask emulate: {} passed on the emulated AVX-512 CPU",
        names.join(", ")
    );
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn install_tools() -> anyhow::Result<()> {
    let present = have("bochs")
        && have("xorriso")
        && Path::new(ISOLINUX_BIN).exists()
        && Path::new(LDLINUX_C32).exists()
        && Path::new("/usr/share/bochs/BIOS-bochs-latest").exists()
        && Path::new("/usr/share/bochs/VGABIOS-lgpl-latest").exists();
    if present {
        return Ok(());
    }
    println!("xtask emulate: installing {}", DEBIAN_PACKAGES.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(DEBIAN_PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .context("running apt-get (the emulator comes from Debian's packages)")
    };
    // A fresh machine may have no package lists yet.
    let status = match install()? {
        s if s.success() => s,
        _ => {
            apt_get_update()?;
            install()?
        }
    };
    ensure!(
        status.success(),
        "apt-get install {} failed ({status})",
        DEBIAN_PACKAGES.join(" ")
    );
    Ok(())
}

fn apt_get_update() -> anyhow::Result<()> {
    println!("xtask emulate: apt-get update");
    let status = Command::new("apt-get")
        .arg("update")
        .stdout(Stdio::null())
        .status()
        .context("running apt-get update")?;
    ensure!(status.success(), "apt-get update failed ({status})");
    Ok(())
}

/// Names of Debian's cloud kernel image packages that apt knows.
fn cloud_kernel_packages() -> anyhow::Result<Vec<String>> {
    let out = Command::new("apt-cache")
        .args([
            "search",
            "--names-only",
            "^linux-image-[0-9.]+-[0-9]+-cloud-amd64-unsigned$",
        ])
        .output()
        .context("running apt-cache")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

/// Debian's newest cloud kernel image (few drivers: it boots in about a minute under Bochs).
fn fetch_kernel() -> anyhow::Result<PathBuf> {
    let dir = paths::download_cache_dir().join("emulate");
    fs::create_dir_all(&dir)?;
    let mut names = cloud_kernel_packages()?;
    if names.is_empty() {
        apt_get_update()?;
        names = cloud_kernel_packages()?;
    }
    // linux-image-6.1.0-47-cloud-amd64-unsigned: order by the numbers in the name.
    names.sort_by_key(|n| {
        n.split(|c: char| !c.is_ascii_digit())
            .filter_map(|p| p.parse::<u64>().ok())
            .collect::<Vec<_>>()
    });
    let package = names
        .last()
        .context("apt-cache lists no Debian cloud kernel image")?;
    let unpacked = dir.join(package);
    if !unpacked.join("boot").exists() {
        for old in fs::read_dir(&dir)? {
            let old = old?.path();
            if old.extension().is_some_and(|e| e == "deb") {
                fs::remove_file(old)?;
            }
        }
        let status = Command::new("apt-get")
            .args(["download", package])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .status()
            .context("running apt-get download")?;
        ensure!(
            status.success(),
            "apt-get download {package} failed ({status})"
        );
        let deb = fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download left no .deb")?;
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&unpacked)
            .status()
            .context("running dpkg-deb")?;
        ensure!(
            status.success(),
            "dpkg-deb -x {} failed ({status})",
            deb.display()
        );
    }
    let boot = unpacked.join("boot");
    fs::read_dir(&boot)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
        })
        .with_context(|| format!("no vmlinuz in {}", boot.display()))
}

/// `cargo` with static linking (the initramfs has no libc) into `target/emulate`.
fn static_cargo() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(paths::workspace_root())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .arg("--quiet");
    cmd
}

/// Builds the tensor crate's test programs static; returns (name, executable) per test.
fn build_static(work: &Path, tests: &[String]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let target_dir = work.join("cargo");
    let mut cmd = static_cargo();
    cmd.args(["test", "-p", "koembed-tensor", "--release", "--no-run"])
        .args([
            "--message-format",
            "json",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    for t in tests {
        cmd.args(["--test", t]);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("building the test programs")?;
    ensure!(
        out.status.success(),
        "cargo test --no-run failed ({})",
        out.status
    );
    let mut programs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (
            msg.pointer("/target/name").and_then(|v| v.as_str()),
            msg.get("executable").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        if tests.iter().any(|t| t == name) {
            programs.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    for t in tests {
        ensure!(
            programs.iter().any(|(n, _)| n == t),
            "no test program {t} in koembed-tensor"
        );
    }
    Ok(programs)
}

fn build_init(work: &Path) -> anyhow::Result<PathBuf> {
    let target_dir = work.join("cargo");
    let status = static_cargo()
        .args(["build", "-p", "koembed-emu-init", "--release"])
        .args(["--target", "x86_64-unknown-linux-gnu", "--target-dir"])
        .arg(&target_dir)
        .status()
        .context("building koembed-emu-init")?;
    ensure!(
        status.success(),
        "building koembed-emu-init failed ({status})"
    );
    Ok(target_dir.join("x86_64-unknown-linux-gnu/release/koembed-emu-init"))
}

/// Boots the ISO in Bochs and follows the serial log until PID 1 says it is done.
fn run_bochs(
    work: &Path,
    cpu: &str,
    iso: &Path,
    serial: &Path,
    timeout: Duration,
) -> anyhow::Result<String> {
    let rc = work.join("bochsrc");
    // No sound devices: on a host without a sound card (the Xeon of 2026-11-27) Bochs 2.7's
    // speaker opened ALSA's default device and aborted ("buffer overflow detected") at start.
    // The guest's tests need none.
    fs::write(
        &rc,
        format!(
            "megs: 1024\n\
             cpu: model={cpu}, count=1, ips=400000000\n\
             romimage: file=/usr/share/bochs/BIOS-bochs-latest\n\
             vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest\n\
             ata0-master: type=cdrom, path={}, status=inserted\n\
             boot: cdrom\n\
             com1: enabled=1, mode=file, dev={}\n\
             display_library: rfb, options=\"timeout=0\"\n\
             log: {}\n\
             clock: sync=none\n\
             speaker: enabled=0\n\
             plugin_ctrl: sb16=0, es1370=0, speaker=0\n\
             panic: action=fatal\n",
            iso.display(),
            serial.display(),
            work.join("bochs.log").display()
        ),
    )?;
    let _ = fs::remove_file(serial);
    // Debian's Bochs is built with its debugger, which waits for a command before it starts:
    // `-rc` gives it `c` (continue). Its display is a VNC server (`rfb`) that waits for no one.
    let commands = work.join("bochs-commands");
    fs::write(&commands, "c\n")?;
    let console = fs::File::create(work.join("bochs.out"))?;
    let mut child = Command::new("bochs")
        .arg("-f")
        .arg(&rc)
        .arg("-rc")
        .arg(&commands)
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .spawn()
        .context("starting bochs")?;
    // The wrapper script `bochs` execs the emulator, so the child is Bochs itself.

    println!("xtask emulate: booting Linux on Bochs ({cpu}); the tests' output follows");
    let start = Instant::now();
    let mut log = String::new();
    let mut offset = 0u64;
    let result = loop {
        std::thread::sleep(Duration::from_secs(2));
        if let Ok(mut f) = fs::File::open(serial) {
            f.seek(SeekFrom::Start(offset))?;
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            offset += bytes.len() as u64;
            let text = String::from_utf8_lossy(&bytes).replace('\r', "");
            print!("{text}");
            std::io::stdout().flush()?;
            log.push_str(&text);
        }
        if log.contains(&format!("{MARK}-DONE")) {
            break Ok(());
        }
        if log.contains("Kernel panic") {
            break Err(anyhow::anyhow!(
                "the emulated kernel panicked (see the log above)"
            ));
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!(
                "bochs stopped ({status}) before the tests finished; see {} and bochs.out",
                work.join("bochs.log").display()
            ));
        }
        if start.elapsed() > timeout {
            break Err(anyhow::anyhow!(
                "no result after {} minutes of emulation",
                timeout.as_secs() / 60
            ));
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "xtask emulate: {:.0} s in the emulator",
        start.elapsed().as_secs_f64()
    );
    result.map(|()| log)
}

/// A cpio archive in the "newc" format, what the kernel unpacks as its initramfs.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    next_inode: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[]);
    }

    fn file(&mut self, name: &str, data: &[u8], perm: u32) {
        self.entry(name, 0o100_000 | perm, data);
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.next_inode += 1;
        let nlink = if mode & 0o040_000 != 0 { 2 } else { 1 };
        let fields = [
            self.next_inode,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for f in fields {
            self.bytes.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}
