import Testing
@testable import NeuMeta

@Suite struct DataTransformTests {
    /// `width × height` image whose pixel (x, y) is (x, y, x + 10·y).
    private func coordinates(width: Int, height: Int) -> RGBImage {
        var pixels: [UInt8] = []
        for y in 0 ..< height {
            for x in 0 ..< width { pixels += [UInt8(x), UInt8(y), UInt8(x + 10 * y)] }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    @Test func centreCropPicksTheKnownPixels() {
        let image = coordinates(width: 5, height: 4)
        let crop = image.centerCropped(width: 3, height: 2)
        #expect(crop.width == 3 && crop.height == 2)
        #expect(crop.pixels == [1, 1, 11, 2, 1, 12, 3, 1, 13, 1, 2, 21, 2, 2, 22, 3, 2, 23])
        // (6 − 3) / 2 = 1.5 rounds half to even, as torchvision's round(): offset 2.
        #expect(coordinates(width: 6, height: 1).centerCropped(width: 3, height: 1)[0, 0].r == 2)
        // A crop wider than the image is zero-padded, (7 − 5) / 2 = 1 column on the left.
        let padded = image.centerCropped(width: 7, height: 4)
        #expect(padded[0, 2] == (0, 0, 0) && padded[6, 2] == (0, 0, 0))
        #expect(padded[1, 2] == (0, 2, 20) && padded[5, 2] == (4, 2, 24))
    }

    @Test func flipReversesColumns() {
        let image = coordinates(width: 4, height: 3)
        let flipped = image.flippedHorizontally()
        for y in 0 ..< 3 {
            for x in 0 ..< 4 { #expect(flipped[x, y] == image[3 - x, y]) }
        }
        #expect(flipped.flippedHorizontally() == image)
    }

    @Test func resizeKeepsConstantsAndIdentity() {
        let value: [UInt8] = [17, 130, 250]
        let constant = RGBImage(width: 37, height: 23, pixels: Array([[UInt8]](repeating: value, count: 37 * 23).joined()))
        let down = constant.resized(shorterSide: 10)
        #expect(down.width == 16 && down.height == 10) // Int(10 · 37 / 23) = 16
        #expect(down.pixels == Array([[UInt8]](repeating: value, count: 160).joined()))
        let up = constant.resized(shorterSide: 50)
        #expect(up.width == 80 && up.height == 50)
        #expect(Set(up.pixels) == [17, 130, 250] && up.pixels.prefix(3) == [17, 130, 250])

        let image = ImageTestFiles.gradient(width: 9, height: 6)
        #expect(image.resized(shorterSide: 6) == image)
    }

    @Test func downscalingAveragesWithTheWidenedTriangle() {
        // Halving [0, 100, 200, 50]: output 0 is centred at 1.0 with taps 0.75, 0.75, 0.25 on
        // inputs 0…2, output 1 at 3.0 with 0.25, 0.75, 0.75 on inputs 1…3 (weights normalised).
        let row = RGBImage(width: 4, height: 1, pixels: [0, 0, 0, 100, 100, 100, 200, 200, 200, 50, 50, 50])
        let half = row.resampled(CropRegion(x: 0, y: 0, width: 4, height: 1), width: 2, height: 1)
        #expect(half.pixels == [71, 71, 71, 121, 121, 121])
    }

    @Test func randomResizedCropIsDeterministicAndInBounds() {
        let image = ImageTestFiles.gradient(width: 64, height: 48)
        let crop = RandomResizedCrop()
        for seed in 0 ..< 50 as Range<UInt64> {
            var a = SeededRandom(seed), b = SeededRandom(seed)
            let region = crop.region(width: 64, height: 48, rng: &a)
            #expect(region == crop.region(width: 64, height: 48, rng: &b))
            #expect(region.x >= 0 && region.y >= 0 && region.x + region.width <= 64 && region.y + region.height <= 48)
            let area = Double(region.width * region.height) / Double(64 * 48)
            #expect(area > 0.05 && area <= 1)

            var c = SeededRandom(seed), d = SeededRandom(seed)
            let output = ImageTransform.train.apply(to: image, size: 16, rng: &c)
            #expect(output.width == 16 && output.height == 16)
            #expect(output == ImageTransform.train.apply(to: image, size: 16, rng: &d))
        }
        var e = SeededRandom(1), f = SeededRandom(2)
        #expect(ImageTransform.train.apply(to: image, size: 16, rng: &e) != ImageTransform.train.apply(to: image, size: 16, rng: &f))
    }

    @Test func randomResizedCropFallsBackToTheClampedCentre() {
        // No region of 2–3× the image area fits, so after 10 attempts the 2:1 image is cut to
        // the widest allowed ratio 4:3 around its centre.
        var rng = SeededRandom(3)
        let region = RandomResizedCrop(scale: 2 ... 3).region(width: 100, height: 50, rng: &rng)
        #expect(region == CropRegion(x: 16, y: 0, width: 67, height: 50))
        let tall = RandomResizedCrop(scale: 2 ... 3).region(width: 30, height: 90, rng: &rng)
        #expect(tall == CropRegion(x: 0, y: 25, width: 30, height: 40))
        let square = RandomResizedCrop(scale: 2 ... 3).region(width: 40, height: 40, rng: &rng)
        #expect(square == CropRegion(x: 0, y: 0, width: 40, height: 40))
    }

    @Test func evalTransformAndNormalisation() {
        var rng = SeededRandom(0)
        let image = ImageTestFiles.gradient(width: 40, height: 30)
        let eval = ImageTransform.eval.apply(to: image, size: 14, rng: &rng)
        // Shorter side to round(14 / 0.875) = 16 (21 × 16), then the centre 14 × 14.
        #expect(eval == image.resized(shorterSide: 16).centerCropped(width: 14, height: 14))

        let tiny = RGBImage(width: 2, height: 1, pixels: [0, 51, 255, 102, 153, 204])
        var planes = [Float](repeating: .nan, count: 6)
        planes.withUnsafeMutableBufferPointer { tiny.normalize(mean: [0, 0.2, 0.5], std: [1, 0.5, 0.25], into: $0.baseAddress!) }
        let expected: [Float] = [0, 0.4, 0, 0.8, 2, 1.2]
        #expect(zip(planes, expected).allSatisfy { abs($0 - $1) < 1e-5 })
    }
}
