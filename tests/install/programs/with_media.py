"""The media extra: a thumbnail of a stored image (pyvips, then Pillow) and a PDF's page count
and first page (pypdfium2), through storeroom.media."""

import io

import pypdfium2
from PIL import Image

from storeroom import FileObject, StorageRegistry
from storeroom.backends.obstore import ObstoreBackend
from storeroom.media.validation import PdfLimits, inspect_content
from storeroom.media.variants import PdfPage, Thumbnail, image_engine

assert image_engine() == "pyvips"  # libvips comes in the pyvips-binary wheel

registry = StorageRegistry()
registry.register_backend(ObstoreBackend("media", "memory://"))
photo = io.BytesIO()
Image.new("RGB", (1200, 900), "orange").save(photo, "JPEG")
original = FileObject(
    backend="media", filename="p.jpg", content=photo.getvalue(), registry=registry
)
original.save()
for engine in ("pyvips", "pillow"):
    thumb = Thumbnail(256, 256, format="webp", engine=engine)
    data = thumb.make(original.iter_chunks())
    with Image.open(io.BytesIO(data)) as made:
        assert (made.format, made.size) == ("WEBP", (256, 192)), (engine, made.size)

document = pypdfium2.PdfDocument.new()
document.new_page(612, 792)
document.new_page(612, 792)
pdf = io.BytesIO()
document.save(pdf)
document.close()
inspected = inspect_content(pdf.getvalue(), [PdfLimits(max_pages=5)], filename="d.pdf")
b"".join(inspected)
assert inspected.findings.content_type == "application/pdf" and inspected.findings.pages == 2
preview = PdfPage(1, width=400, format="png").make(pdf.getvalue())
with Image.open(io.BytesIO(preview)) as page:
    assert (page.format, page.size) == ("PNG", (400, 518)), page.size
print("media ok")
