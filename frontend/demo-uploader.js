// The demo's uploader: Uppy does the resumable protocols; this file only wires it to the
// demo's endpoints. Bundled by `npm run build:demo` into src/storeroom/demo/static/uploader.js
// (committed, so `make demo` needs no npm).
//
// - tus (local disk, memory): a session is begun with POST /uploads/resumable; @uppy/tus
//   sends the file in PATCH chunks to the session's signed endpoint, asks HEAD where to
//   resume after a failure and carries on.
// - s3-multipart: @uppy/aws-s3 speaks Uppy's Companion protocol to /uploads (the server
//   begins the session, signs each part, lists the stored parts to resume and completes);
//   the multipart upload is remembered per file, so a page reload resumes it too.
// Either way the demo's own /api/uploads/{id}/complete then verifies the file and lists it.
import Uppy from '@uppy/core'
import AwsS3 from '@uppy/aws-s3'
import Tus from '@uppy/tus'

const CHUNK = 16 * 1024 * 1024
const SAVED = 'storeroom-upload:'

export function createUploader ({ protocol, endpoint, onProgress, retries = 5 }) {
  const uppy = new Uppy({ autoProceed: false, allowMultipleUploadBatches: true })
  if (protocol === 'tus') {
    uppy.use(Tus, { endpoint: '', chunkSize: CHUNK, retryDelays: [200, 500, 1000, 2000, 3000],
      removeFingerprintOnSuccess: true })
    // The session is remembered per file (Uppy's file id: name, type, size, date), so after
    // a page reload the same file resumes: tus-js-client finds its upload URL for the same
    // endpoint and asks HEAD where to carry on.
    uppy.addPreProcessor(async (fileIDs) => {
      for (const id of fileIDs) {
        const file = uppy.getFile(id)
        let session = JSON.parse(localStorage.getItem(SAVED + id) || 'null')
        if (!session) {
          const begun = await fetch(`${endpoint}/resumable`, {
            method: 'POST', headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ filename: file.name, type: file.type || 'application/octet-stream', size: file.size })
          })
          const body = await begun.json()
          if (!begun.ok) throw new Error(body.error || begun.statusText)
          session = { id: body.id, endpoint: body.endpoint }
          localStorage.setItem(SAVED + id, JSON.stringify(session))
        }
        uppy.setFileState(id, { tus: { endpoint: session.endpoint } })
        uppy.setFileMeta(id, { session: session.id })
      }
    })
  } else {
    uppy.use(AwsS3, { companionEndpoint: endpoint, shouldUseMultipart: true,
      getChunkSize: () => CHUNK, limit: 1 })
    // The multipart upload ({uploadId, key}) is remembered per file as for tus: after a page
    // reload the same file gets it back, and @uppy/aws-s3 lists the stored parts (ListParts)
    // and sends only the rest.
    uppy.on('file-added', (file) => {
      uppy.setFileMeta(file.id, { size: file.size })
      const saved = JSON.parse(localStorage.getItem(SAVED + file.id) || 'null')
      if (saved) uppy.setFileState(file.id, { s3Multipart: saved })
    })
    uppy.on('upload-progress', (file) => {
      const state = uppy.getFile(file.id)?.s3Multipart
      if (state?.uploadId) localStorage.setItem(SAVED + file.id, JSON.stringify(state))
    })
  }
  uppy.on('upload-progress', (file, progress) => {
    if (progress.bytesTotal) onProgress?.(progress.bytesUploaded / progress.bytesTotal)
  })

  // Upload one File; resolves with the upload session's id once every byte is stored.
  async function upload (data) {
    uppy.cancelAll()
    const id = uppy.addFile({ name: data.name, type: data.type || 'application/octet-stream', data })
    let result = await uppy.upload()
    // A dropped connection fails the part in flight; retrying resumes after what the store
    // already holds (tus: HEAD; S3: ListParts).
    for (let attempt = 0; result?.failed?.length && attempt < retries; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 500 * (attempt + 1)))
      result = await uppy.retryUpload(id)
    }
    localStorage.removeItem(SAVED + id) // finished or failed: the next try begins anew
    if (!result || result.failed?.length) {
      throw new Error(result?.failed?.[0]?.error || 'the upload failed')
    }
    const file = uppy.getFile(id)
    return protocol === 'tus' ? file.meta.session : file.response.body.key
  }

  return { upload, uppy }
}

window.StoreroomUploader = { createUploader }
