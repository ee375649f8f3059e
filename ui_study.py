"""The user study's two views (UI only; the study itself is comparisons.study): the participant's own
page, /study, which shows nothing of the studio, and the admin tab behind V2V_STUDY_PASSWORD."""
from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from ui_common import METHOD_NAMES, call_service

STUDY_DB = os.environ.get("V2V_STUDY_DB", "study.db")


# -- User study ------------------------------------------------------------------------------------
# The two study videos play as one: play, pause, scrub or speed on either is mirrored on the other
# (a participant compares them at the same instant, also on a phone).
SYNC_STUDY_VIDEOS_JS = """
() => {
  // idempotent mirroring (no timers): each handler only acts when the partner differs, so the partner's
  // own event finds nothing to do and nothing ping-pongs, however slow the machine is
  const mirror = (from, to) => {
    from.addEventListener('play', () => { if (to.paused) { to.currentTime = from.currentTime; to.play().catch(() => {}); } });
    from.addEventListener('pause', () => { if (!to.paused) { to.pause(); to.currentTime = from.currentTime; } });
    from.addEventListener('seeked', () => { if (Math.abs(to.currentTime - from.currentTime) > 0.05)
      to.currentTime = from.currentTime; });
    from.addEventListener('ratechange', () => { if (to.playbackRate !== from.playbackRate)
      to.playbackRate = from.playbackRate; });
  };
  setInterval(() => {
    const l = document.querySelector('#study-left video'), r = document.querySelector('#study-right video');
    if (!l || !r || (l._v2vPartner === r && r._v2vPartner === l)) return;
    l._v2vPartner = r; r._v2vPartner = l;
    l.muted = true; r.muted = true; l.loop = true; r.loop = true;
    mirror(l, r); mirror(r, l);
  }, 300);
}
"""


def report_files(db) -> tuple[Path, Path, Path]:
    """Where the admin view writes the study's win-rate chart, votes (CSV) and design (JSON): a folder of the system's
    temp directory kept per database (the 10 s refresh overwrites it), never beside the database, which an operator
    may keep where Gradio serves nothing from (a Space's persistent /data)."""
    import hashlib
    import tempfile

    db = Path(db).resolve()
    folder = Path(tempfile.gettempdir()) / "v2v-study" / f"{db.stem}-{hashlib.sha1(str(db).encode()).hexdigest()[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    return tuple(folder / f"{db.stem}.{kind}" for kind in ("winrates.png", "votes.csv", "design.json"))


def _open_study_db():
    from comparisons import study

    if not Path(STUDY_DB).exists():
        raise gr.Error("No study yet: the admin creates one (User study tab, or `python -m comparisons study create "
                       "--results BUNDLE ... --out study.db`).")
    return study.connect(STUDY_DB)


# The participant's videos come from this route of the study's own (study_routes), never from Gradio's file cache,
# where the studio's own copy of a result sits under its method's name: /study-video/TOKEN/ID.mp4 answers only the
# ids the study assigned to that session's participant (comparisons.study.served_video), 404 to anything else.
STUDY_VIDEO_ROUTE = "/study-video"
CHOICE_LABELS = {"left": "Left", "right": "Right", "tie": "Tie", "both_bad": "Both bad"}
# No navigation bar on either page: the participant's page must offer no way into the studio ("Home"), and the
# study page is reached by its link (the User study tab gives it). gr.Navbar(visible=False) did not hide it in
# Gradio 6.31 (measured in Chromium), so the bar's holder is hidden by style; so is the participant page's footer
# (its "Use via API" link opens the studio's API page, which lists the methods).
STUDY_CSS = """
.nav-holder { display: none !important; }
.gradio-container:has(#study-info) footer { display: none !important; }
#study-left video, #study-right video { width: 100%; max-height: 36vh; background: #000; border-radius: 6px; }
@media (max-width: 640px) { #study-left video, #study-right video { max-height: 21vh; } }
"""


def study_routes() -> list:
    """The routes the studio's server adds for the study (pass to launch(app_kwargs={"routes": ...}): registered
    before Gradio's own, so no page route shadows them)."""
    from starlette.responses import FileResponse, PlainTextResponse
    from starlette.routing import Route

    def video(request):
        from comparisons import study

        vid = request.path_params["vid"].removesuffix(".mp4")
        path = study.served_video(STUDY_DB, request.path_params["token"], vid)
        if path is None:
            return PlainTextResponse("Not found", status_code=404)
        # no file name, no Content-Disposition: the response names nothing; private: no shared cache keeps it
        return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private, max-age=3600"})

    return [Route(STUDY_VIDEO_ROUTE + "/{token}/{vid}", video, methods=["GET", "HEAD"])]


def video_tag(token: str | None, path: str | None) -> str:
    """The HTML of one study video from the study's route (muted, looping, no download); empty without a video."""
    if not token or not path:
        return ""
    return (f'<video src="{STUDY_VIDEO_ROUTE}/{token}/{Path(path).name}" controls muted loop playsinline preload="auto" '
            'controlslist="nodownload" disablepictureinpicture></video>')


def build_participant_page(page):
    """The participant's page (/study): its own page, so nothing of the studio (no method name, no other
    tab, no way into the studio) reaches a participant's browser; videos from the study's own route under per-
    participant opaque ids, without download buttons; the questions beside the videos at desktop size."""
    from comparisons import study

    intro = gr.Markdown("## User study\nBlind pairwise comparison: for each pair, pick the better clip for each "
                        "question. Your answers are saved as you give them: after a reload, enter the same name to "
                        "continue.")
    with gr.Row() as login:
        name = gr.Textbox(label="Your name or code", scale=3)
        start = gr.Button("Start / continue", variant="primary", scale=1)
    info = gr.Markdown(elem_id="study-info")
    with gr.Column(visible=False) as voting:
        with gr.Row(equal_height=True):
            # columns of at least 300 px: side by side on a desktop, one above the other on a phone
            with gr.Column(min_width=300):
                left = gr.HTML(label="Left", elem_id="study-left")
            with gr.Column(min_width=300):
                right = gr.HTML(label="Right", elem_id="study-right")
        with gr.Row():
            radios = [gr.Radio([(v, k) for k, v in CHOICE_LABELS.items()], label=c.replace("_", " "),
                               elem_id=f"vote-{c}", min_width=150) for c in study.CRITERIA]
        submit = gr.Button("Next pair")
    current = gr.State(None)
    open_db = _open_study_db

    def labels(missing=()):
        return [gr.update(label=c.replace("_", " ") + ("  ⚠ please answer this question" if c in missing else ""))
                for c in study.CRITERIA]

    def show_pair(conn, token):
        annotator = study.annotator_of(conn, token)
        p = study.next_pair(conn, annotator)
        done, total = study.progress(conn, annotator)
        if p is None:      # finished: thanks, and nothing else (no empty players, no button)
            return (token, None, f"## Thank you!\nAll {total} pairs are done; you can close this page.", "", "",
                    gr.update(visible=False), gr.update(visible=False), gr.update(visible=False),
                    *[gr.update(value=None, label=c.replace("_", " ")) for c in study.CRITERIA])
        shown = study.present(conn, annotator, p)
        lv, rv = study.served_videos(conn, STUDY_DB, annotator, p)
        given = study.answers(conn, annotator, p)
        asked = f" Prompt: **{shown['prompt']}**" if shown.get("prompt") else ""
        return (token, p, f"Pair {done + 1} of {total}.{asked}", video_tag(token, lv), video_tag(token, rv),
                gr.update(visible=True), gr.update(visible=False), gr.update(visible=False),
                *[gr.update(value=given.get(c), label=c.replace("_", " ")) for c in study.CRITERIA])

    def begin(annotator):
        conn = open_db()
        token = call_service(study.start_session, conn, annotator)
        return show_pair(conn, token)

    def answer(token, pair, criterion, choice):
        """Each answer is saved at once (so a reload loses nothing); only the participant view can vote."""
        if choice is None or pair is None:
            return
        call_service(study.participant_vote, open_db(), token, pair, criterion, choice)

    def next_or_warn(token, pair, *choices):
        if pair is None:
            raise gr.Error("Press Start first.")
        missing = [c for c, ch in zip(study.CRITERIA, choices) if ch is None]
        if missing:   # a warning beside each unanswered question; the videos and the given answers stay
            gr.Warning(f"Answer every question first ({', '.join(m.replace('_', ' ') for m in missing)}).")
            return (token, pair, gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), gr.update(),
                    *labels(missing))
        return show_pair(open_db(), token)

    def prefill(request: gr.Request):
        """An invitation link (/study?code=CODE) fills in the participant's code."""
        code = dict(request.query_params).get("code") if request is not None else None
        return gr.update(value=code) if code else gr.update()

    page.load(prefill, None, name, api_visibility="private")
    token = gr.State(None)
    outs = [token, current, info, left, right, voting, login, intro, *radios]
    start.click(begin, name, outs, api_visibility="private")
    submit.click(next_or_warn, [token, current, *radios], outs, api_visibility="private")
    for c, r in zip(study.CRITERIA, radios):
        r.input(lambda t, p, ch, c=c: answer(t, p, c, ch), [token, current, r], None, api_visibility="private",
                show_progress="hidden")


def build_study_admin_tab():
    from comparisons import study

    gr.Markdown("Participants vote on their own page, **/study** (e.g. http://127.0.0.1:7860/study): it shows "
                "nothing of the studio, so the comparison stays blind. This view, behind `V2V_STUDY_PASSWORD`, "
                "creates the study and shows its results.")
    password = gr.Textbox(type="password", label="Admin password (V2V_STUDY_PASSWORD)")
    with gr.Accordion("Create the study from results bundles", open=False):
        bundles = gr.File(label="Results zips (Compare downloads or `comparisons import` bundles, zipped)",
                          file_count="multiple", file_types=[".zip"], elem_id="study-bundles")
        checks = gr.Number(value=0, precision=0, minimum=0, label="Attention checks",
                           info="extra pairs showing one video on both sides; the report flags who picked a side")
        create = gr.Button("Create study", elem_id="create-study")
        created = gr.Markdown(elem_id="study-created")
    with gr.Accordion("Invitation mode: only holders of a link can vote", open=False):
        n_invites = gr.Number(value=3, precision=0, minimum=1, label="Participants to invite")
        make_invites = gr.Button("Create invitation links", elem_id="make-invites")
        invites = gr.Markdown(elem_id="invites")
    reference = gr.Dropdown(METHOD_NAMES, value="StreamDiffusion", label="Reference method",
                            allow_custom_value=True)
    show = gr.Button("Show results")
    results = gr.Markdown()
    plot = gr.Image(label="Win rates")
    csv_file = gr.File(label="Votes (CSV) and the study design (JSON), to re-run the analysis elsewhere",
                       file_count="multiple")
    refresh = gr.Timer(10.0)
    open_db = _open_study_db

    def check_password(pw):
        expected = os.environ.get("V2V_STUDY_PASSWORD")
        if not expected:
            raise gr.Error("The admin view is off: set V2V_STUDY_PASSWORD when starting the studio.")
        if pw != expected:
            raise gr.Error("Wrong password.")

    def create_study(pw, files, n_checks):
        check_password(pw)
        if not files:
            raise gr.Error("Upload at least one results zip.")
        call_service(study.create, list(files), STUDY_DB, attention_checks=int(n_checks or 0))
        methods = study.methods(STUDY_DB)
        conn = open_db()
        try:
            said = study.describe(conn)            # counted from the database: the report says the same
        finally:
            conn.close()
        return f"Study ready: {said}", gr.update(choices=methods, value=methods[0] if methods else None)

    def create_invites(pw, n, request: gr.Request):
        check_password(pw)
        codes = study.invite(open_db(), int(n or 0))
        host = (request.headers.get("host") if request is not None else None) or "127.0.0.1:7860"
        links = "\n".join(f"- http://{host}/study?code={c}" for c in codes)
        return (f"{len(codes)} new links (from now on only invited codes can vote; send each person one):\n\n"
                f"{links}")

    def admin(pw, ref):
        check_password(pw)
        open_db().close()
        png, csv_path, design = report_files(STUDY_DB)
        text = study.report(STUDY_DB, ref, png)
        study.export(STUDY_DB, csv_path)
        study.export_design(STUDY_DB, design)
        return text, str(png), [str(csv_path), str(design)]

    def admin_refresh(pw, ref):
        """The admin view refreshes by itself once the password was accepted (silent otherwise)."""
        if not pw or pw != os.environ.get("V2V_STUDY_PASSWORD") or not Path(STUDY_DB).exists():
            return gr.update(), gr.update(), gr.update()
        return admin(pw, ref)

    show.click(admin, [password, reference], [results, plot, csv_file], api_visibility="private")
    refresh.tick(admin_refresh, [password, reference], [results, plot, csv_file], api_visibility="private",
                 show_progress="hidden")
    create.click(create_study, [password, bundles, checks], [created, reference], api_visibility="private")
    make_invites.click(create_invites, [password, n_invites], invites, api_visibility="private")
