// Seed 004 (job queue API documentation, "Frontend Integration Guide"): pollJobStatus and
// pollWithTimeout over /api/jobs/{job_id}, types stripped by hand. Their logic is the
// seed's, unchanged; the only adaptations are the base URL in front of the path, where
// `token` comes from, and an X-Site-Id header that matches the token.
//
//   JOBTRAIL_URL=http://127.0.0.1:8000 JOBTRAIL_TOKEN=... JOBTRAIL_SITE=site1 \
//     node poll_job.mjs JOB_ID [TIMEOUT_MS]
// prints the job's result as JSON and exits 0, or prints the error and exits 1.

const baseUrl = process.env.JOBTRAIL_URL;
const token = process.env.JOBTRAIL_TOKEN;
const siteId = process.env.JOBTRAIL_SITE;

// --- seed 004, unchanged but for `${baseUrl}` and X-Site-Id ---------------------------
// 2. Poll for job status
async function pollJobStatus(jobId) {
  const response = await fetch(`${baseUrl}/api/jobs/${jobId}`, {
    headers: {
      'Authorization': `Bearer ${token}`,
      'X-Site-Id': siteId
    }
  });

  return await response.json();
}

async function pollWithTimeout(jobId, timeoutMs = 300000) {
  const startTime = Date.now();

  while (Date.now() - startTime < timeoutMs) {
    const status = await pollJobStatus(jobId);

    if (status.status === 'completed') {
      return status.result;
    }

    if (status.status === 'failed') {
      throw new Error(status.error || 'Job failed');
    }

    await new Promise(resolve => setTimeout(resolve, 2000));
  }

  throw new Error('Job timeout exceeded');
}
// --- end of seed 004 -------------------------------------------------------------------

const timeoutMs = process.argv[3] === undefined ? undefined : Number(process.argv[3]);
pollWithTimeout(process.argv[2], timeoutMs).then(
  (result) => {
    console.log(JSON.stringify(result));
  },
  (error) => {
    console.error(`failed: ${error.message}`);
    process.exit(1);
  }
);
