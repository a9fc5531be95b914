// Seed 000 (Task 2.2, "Frontend Polling Pattern"): the polling loop over
// /api/ops/ai-evaluation-jobs/{job_id}, types stripped by hand. The loop is the seed's,
// unchanged; the only adaptations are where `token` and `siteId` come from and the
// base URL in front of the path (a browser resolves it against the page; node cannot).
//
//   JOBTRAIL_URL=http://127.0.0.1:8000 JOBTRAIL_TOKEN=... JOBTRAIL_SITE=site1 \
//     node poll_evaluation.mjs JOB_ID
// prints the evaluation as JSON and exits 0, or prints the error and exits 1.

const baseUrl = process.env.JOBTRAIL_URL;
const token = process.env.JOBTRAIL_TOKEN;
const siteId = process.env.JOBTRAIL_SITE;

// --- seed 000, unchanged but for `${baseUrl}` ---------------------------------------
async function pollJobStatus(jobId) {
  const maxAttempts = 360; // 1 hour max (polling every 10s)
  let attempts = 0;

  while (attempts < maxAttempts) {
    const response = await fetch(`${baseUrl}/api/ops/ai-evaluation-jobs/${jobId}`, {
      headers: {
        'X-Site-Id': siteId,
        'Authorization': `Bearer ${token}`
      }
    });

    const result = await response.json();

    if (result.data.status === 'completed') {
      return result.data.evaluation; // Success!
    }

    if (result.data.status === 'failed') {
      throw new Error(result.data.error_message);
    }

    // Still pending/processing - wait and retry
    await new Promise(resolve => setTimeout(resolve, 10000)); // 10s
    attempts++;
  }

  throw new Error('Job timed out after 1 hour');
}
// --- end of seed 000 -------------------------------------------------------------------

pollJobStatus(process.argv[2]).then(
  (evaluation) => {
    console.log(JSON.stringify(evaluation));
  },
  (error) => {
    console.error(`failed: ${error.message}`);
    process.exit(1);
  }
);
