"""Triton's perf_analyzer (from the tritonclient 2.51 wheel; scripts/lib/fetch-perf-analyzer.sh installs it) completes
measurements against the gRPC port, unary and streaming: it reads the model's metadata and configuration, sends
requests and checks the server's statistics against what it sent."""

import os
import re
import subprocess

import pytest

PERF_ANALYZER = os.environ.get("SLUICE_PERF_ANALYZER")


@pytest.mark.parametrize("mode", [[], ["--streaming"]], ids=["unary", "streaming"])
def test_perf_analyzer_completes_a_measurement(grpc, mode):
    assert PERF_ANALYZER, "SLUICE_PERF_ANALYZER is unset: run scripts/test.sh, or scripts/lib/fetch-perf-analyzer.sh"
    result = subprocess.run(
        [PERF_ANALYZER, "-m", "iris", "-i", "grpc", "-u", grpc, "--shape", "float_input:1,4",
         "--measurement-mode", "count_windows", "--measurement-request-count", "200",
         "--stability-percentage", "100", "--concurrency-range", "2", *mode],
        capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    served = int(re.search(r"Successful request count: (\d+)", output).group(1))
    assert served >= 200, output
    assert re.search(r"Concurrency: 2, throughput: [\d.]+ infer/sec", output), output
