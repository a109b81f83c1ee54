//! The remux and the stream choice against real AAC: HLS segments made by ffmpeg (a dev check,
//! when `PLAYLISTD_HLS_DIR` names a folder of `init.mp4` + `seg*.m4s`).

use super::remux::Remuxer;

#[test]
fn ffmpeg_hls_remuxes_into_a_standard_m4a() {
    let Some(dir) = std::env::var_os("PLAYLISTD_HLS_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Remuxer::new(
        &std::fs::read(dir.join("init.mp4")).unwrap(),
        &tmp.path().join("raw"),
    )
    .unwrap();
    for i in 0.. {
        let Ok(seg) = std::fs::read(dir.join(format!("seg{i}.m4s"))) else {
            break;
        };
        r.push_segment(&seg).unwrap();
    }
    eprintln!("{} samples, {:.3} s", r.samples(), r.duration_secs());
    let out = std::path::PathBuf::from("/tmp/hls/out.m4a");
    r.finish(&out).unwrap();
}
