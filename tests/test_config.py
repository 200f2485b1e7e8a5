from pathlib import Path

import pytest
import torch

from selfplay.config import ConfigError, SelfPlayConfig, parse_config, read_yaml_config
from selfplay.policy.loading import pick_attention, pick_engine_dtype


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_then_command_line_overrides(tmp_path):
    path = write(tmp_path, "student_samples: 4\nteacher_prompts: 3\nlora: true\n")
    config = parse_config(path, ["--student-samples", "6", "--max_steps", "2", "--output-dir", "x"])
    assert (config.student_samples, config.teacher_prompts, config.lora, config.max_steps, config.output_dir) == (
        6, 3, True, 2, "x",
    )


def test_unknown_yaml_key_names_file_key_and_suggestion(tmp_path):
    path = write(tmp_path, "student_sample: 4\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown config key 'student_sample' \(did you mean 'student_samples'\?\)"):
        read_yaml_config(path)


def test_wrong_type_in_yaml_names_file_and_key(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml: key 'max_steps' = 'three': must be an integer"):
        read_yaml_config(write(tmp_path, "max_steps: three\n"))
    with pytest.raises(ConfigError, match=r"key 'index_type' = 'kdtree': must be one of"):
        read_yaml_config(write(tmp_path, "index_type: kdtree\n"))


def test_unknown_command_line_flag_is_named():
    with pytest.raises(ConfigError, match=r"command line: unknown config key 'studnet_samples'.*student_samples"):
        parse_config(None, ["--studnet-samples", "4"])


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="student_samples"):
        SelfPlayConfig(student_samples=1)
    with pytest.raises(ConfigError, match="band_low"):
        SelfPlayConfig(band_low=0.9, band_high=0.5)
    with pytest.raises(ConfigError, match="arithmetic_uses_givens.*set arithmetic_check: true too"):
        SelfPlayConfig(arithmetic_uses_givens=True)
    assert SelfPlayConfig(arithmetic_check=True, arithmetic_uses_givens=True).arithmetic_uses_givens


def test_yaml_not_a_mapping_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="must be a mapping"):
        read_yaml_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not found"):
        read_yaml_config(tmp_path / "missing.yaml")


def test_shipped_experiment_configs_parse():
    shipped = sorted(Path(__file__).parent.parent.glob("experiments/*.yaml"))
    assert {path.name for path in shipped} >= {"cpu-smoke.yaml", "learn-cpu.yaml", "opensir-llama3b.yaml"}
    for path in shipped:
        parse_config(str(path), [])


def test_engine_dtype_auto_is_bfloat16_only_where_the_hardware_computes_in_it():
    assert SelfPlayConfig().vllm_dtype == "auto"
    assert pick_engine_dtype("auto", on_gpu=True, cpu_computes_bf16=False) == "bfloat16"
    assert pick_engine_dtype("auto", on_gpu=False, cpu_computes_bf16=True) == "bfloat16"
    assert pick_engine_dtype("auto", on_gpu=False, cpu_computes_bf16=False) == "float32"  # emulated bf16 is slower
    assert pick_engine_dtype("bfloat16", on_gpu=False, cpu_computes_bf16=False) == "bfloat16"  # a choice is kept
    assert pick_engine_dtype("float16", on_gpu=True, cpu_computes_bf16=True) == "float16"


def test_attention_auto_is_eager_on_cpu_and_transformers_default_elsewhere():
    assert SelfPlayConfig().attention == "auto"
    assert pick_attention("auto", torch.device("cpu")) == "eager"  # faster than sdpa's CPU kernels here
    assert pick_attention("auto", torch.device("cuda")) is None  # transformers picks sdpa where the model has it
    assert pick_attention("sdpa", torch.device("cpu")) == "sdpa"  # a choice is kept


def test_the_reference_recipe_trains_the_reference_batch_per_optimizer_step():
    """OpenSIR per optimizer step: 4 seeds x 8 samples per process per micro-step, 8 accumulation rounds, 2
    processes: 512 teacher completions, up to 4,096 student solutions, 128 teacher + 128 student rows trained."""
    path = Path(__file__).parent.parent / "experiments/opensir-llama3b.yaml"
    config = SelfPlayConfig(**read_yaml_config(path))
    assert config.per_update() == {"teacher_completions": 512, "student_solutions": 4096, "teacher_rows": 128,
                                   "student_rows": 128}
    world = 2  # the world size the file names
    assert "2 training\n# processes" in path.read_text()
    per_gpu_round = {key: value // world // config.rounds_per_update for key, value in config.per_update().items()}
    assert per_gpu_round == {"teacher_completions": 32, "student_solutions": 256, "teacher_rows": 8, "student_rows": 8}
    assert (config.learning_rate, config.warmup_steps, config.max_grad_norm) == (3e-7, 25, 0.5)
