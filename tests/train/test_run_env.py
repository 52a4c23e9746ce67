"""env.json's processor model: what makes fp32 runs differ between machines."""

from __future__ import annotations

import platform

from medtransfer.train.run_env import cpu_model, environment


def test_cpu_model_is_the_first_model_name_of_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 207\nmodel name\t: Intel(R) Xeon(R) Processor\n"
        "flags\t\t: fpu avx2\n\nprocessor\t: 1\nmodel name\t: Other Name\n"
    )
    assert cpu_model(info) == "Intel(R) Xeon(R) Processor"


def test_cpu_model_without_cpuinfo_falls_back_to_platform(tmp_path, monkeypatch):
    monkeypatch.setattr(platform, "processor", lambda: "x86_64")
    assert cpu_model(tmp_path / "absent") == "x86_64"
    (tmp_path / "empty").write_text("processor\t: 0\nmodel name\t:   \n")
    assert cpu_model(tmp_path / "empty") == "x86_64"
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert cpu_model(tmp_path / "absent") is None


def test_environment_records_the_cpu_model():
    env = environment("cpu", 3)
    assert env["cpu_model"] == cpu_model()
    assert env["seed"] == 3
