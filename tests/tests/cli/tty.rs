//! `--wait` as a person at a terminal sees it (under a pseudo-terminal made by
//! util-linux `script`): a spinner redrawn in place, each status change kept
//! as a line; and as a script or a log sees it (stderr not a terminal): the
//! same status lines, plain, and no terminal control at all. The volume
//! service is stopped (SIGSTOP) while each create starts, so `creating` is
//! seen for sure however fast the backend is, then let go (SIGCONT).

use scoria_proto::v1 as pb;
use scoria_tests::stack::{DbKind, Stack};

use crate::{Running, binary, command, signal_volume_service};

/// `text` quoted for `sh`.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Whether `line` is `volume <id>: <status> after <seconds>s`.
fn is_status_line(line: &str, id: &str, status: &str) -> bool {
    line.strip_prefix(&format!("volume {id}: {status} after "))
        .and_then(|rest| rest.strip_suffix('s'))
        .is_some_and(|secs| secs.parse::<f64>().is_ok())
}

/// `scoria volume create --size 1 --name <name> --wait -f value -c id`.
fn create_args(name: &str) -> Vec<String> {
    [
        "volume", "create", "--size", "1", "--name", name, "--wait", "-f", "value", "-c", "id",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The one volume of `p1` named `name`.
async fn named(stack: &Stack, name: &str) -> pb::Volume {
    let found = stack
        .volumes("p1")
        .list_volumes(pb::ListVolumesRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .volumes;
    let [volume] = found.as_slice() else {
        panic!("one volume named {name} expected: {found:?}");
    };
    volume.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_shows_a_spinner_on_a_terminal_and_plain_lines_elsewhere() {
    let stack = Stack::start(DbKind::Sqlite).await;

    // Not a terminal: plain status lines on stderr, the id alone on stdout.
    signal_volume_service(&stack, "-STOP").await;
    let mut cli = command(&stack, binary());
    cli.args(create_args("piped"));
    let running = Running::spawn(cli);
    running.wait_for(": creating after ").await;
    signal_volume_service(&stack, "-CONT").await;
    let plain = running.finish().await.ok();
    let id = plain.text().to_owned();
    assert_eq!(named(&stack, "piped").await.id, id, "{plain}");
    let lines: Vec<&str> = plain.stderr.lines().collect();
    assert!(
        lines.len() >= 2
            && is_status_line(lines[0], &id, "creating")
            && is_status_line(lines[lines.len() - 1], &id, "available"),
        "{plain}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with(&format!("volume {id}: "))),
        "{plain}"
    );
    assert!(
        !plain.stderr.contains('\x1b') && !plain.stderr.contains('\r'),
        "terminal control in a piped run:\n{plain:?}"
    );
    let volume = stack.get_volume("p1", &id).await.expect("get");
    assert_eq!(volume.status(), pb::VolumeStatus::Available, "{volume:?}");

    // A terminal: `script` runs the CLI on a pseudo-terminal and copies what
    // it drew (stdout and stderr both) to its own stdout.
    let line = std::iter::once(binary().display().to_string())
        .chain(create_args("tty"))
        .map(|a| quoted(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = command(&stack, "script");
    script
        .env("TERM", "xterm-256color")
        .args(["-qfec", &line, "/dev/null"]);
    signal_volume_service(&stack, "-STOP").await;
    let running = Running::spawn(script);
    // The spinner, redrawn while the volume is creating: status and time so far
    // (before the first answer it shows the volume alone, not a bare tick).
    running.wait_for(": creating [").await;
    signal_volume_service(&stack, "-CONT").await;
    let tty = running.finish().await.ok();
    let volume = named(&stack, "tty").await;
    assert_eq!(volume.status(), pb::VolumeStatus::Available, "{volume:?}");
    let id = &volume.id;
    let screen = &tty.stdout;
    for shown in [
        format!("volume {id} ["),
        format!("volume {id}: creating ["),
        format!("volume {id}: creating after "),
        format!("volume {id}: available after "),
    ] {
        assert!(
            screen.contains(&shown),
            "no {shown:?} on the terminal:\n{screen:?}"
        );
    }
    assert!(
        screen.contains("\x1b[") && screen.contains('\r'),
        "no terminal control on the terminal:\n{screen:?}"
    );
    assert!(
        screen
            .chars()
            .any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
        "no spinner tick (a braille pattern):\n{screen:?}"
    );
    // The id is printed once the spinner is gone, on a line of its own.
    let last = screen
        .split(['\r', '\n'])
        .map(|l| l.trim_start_matches("\x1b[2K"))
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert_eq!(last, id, "{screen:?}");

    stack.assert_quota_exact().await;
}
